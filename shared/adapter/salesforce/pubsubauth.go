package salesforce

import (
	"context"
)

// The Pub/Sub API (spec §9.1) carries the tenant's session as gRPC metadata
// rather than an Authorization header, so its client (shared/adapter/pubsub)
// needs the token itself. It gets it only for an endpoint this package
// checked under the tenant's EndpointPolicy, so the one rule of endpoint.go
// also decides where the Pub/Sub client may send it.

const opPubSubAuth = "pub/sub auth"

// PubSubEndpoint is a Pub/Sub API address the endpoint policy let the
// tenant's access token go to. Only Client.PubSubEndpoint makes one.
type PubSubEndpoint struct {
	addr      string
	plaintext bool
}

// Addr is the checked host:port.
func (e PubSubEndpoint) Addr() string { return e.addr }

// Plaintext reports whether the endpoint is reached without TLS (loopback or
// a development host the policy lists).
func (e PubSubEndpoint) Plaintext() bool { return e.plaintext }

// PubSubEndpoint checks that the tenant's access token may go to the Pub/Sub
// API at addr (host:port), over TLS or, when plaintext, without: TLS to the
// tenant's My Domain, Salesforce's hosts (api.pubsub.salesforce.com) or an
// allowed host; plaintext only to loopback or a listed development host.
// A refusal is a PermanentTenant *Error with Code CodeUnsafeEndpoint, and no
// token has been fetched or sent.
func (c *Client) PubSubEndpoint(addr string, plaintext bool) (PubSubEndpoint, error) {
	if msg := c.s.policy.checkPubSub(addr, plaintext, c.s.myDomain); msg != "" {
		return PubSubEndpoint{}, unsafeEndpoint(opPubSubAuth, msg)
	}
	return PubSubEndpoint{addr: addr, plaintext: plaintext}, nil
}

// PubSubAuth is the session as the Pub/Sub API's metadata carries it:
// accesstoken, instanceurl and tenantid (the org id from the token
// response's id URL, spec §1).
type PubSubAuth struct {
	AccessToken string
	InstanceURL string
	TenantID    string
	sess        *session
}

// PubSubAuth returns the current session for ep (fetching a token if none
// is held; the REST calls share it). ep must come from PubSubEndpoint.
func (c *Client) PubSubAuth(ctx context.Context, ep PubSubEndpoint) (PubSubAuth, error) {
	if ep.addr == "" {
		return PubSubAuth{}, unsafeEndpoint(opPubSubAuth, "Pub/Sub API endpoint not checked")
	}
	// Checked again at the point of use: the policy is the client's, fixed
	// at New, so this only guards against a PubSubEndpoint of another client.
	if msg := c.s.policy.checkPubSub(ep.addr, ep.plaintext, c.s.myDomain); msg != "" {
		return PubSubAuth{}, unsafeEndpoint(opPubSubAuth, msg)
	}
	sess, err := c.tokens.get(ctx)
	if err != nil {
		return PubSubAuth{}, withOp(opPubSubAuth, err)
	}
	if sess.orgID == "" {
		return PubSubAuth{}, &Error{Op: opPubSubAuth, Code: CodeResultMismatch,
			Message: "token response without an id URL: no org id for the Pub/Sub tenantid", Class: PermanentTenant}
	}
	return PubSubAuth{AccessToken: sess.token.AccessToken, InstanceURL: sess.instanceURL, TenantID: sess.orgID, sess: sess}, nil
}

// InvalidatePubSubAuth drops a's session after the Pub/Sub API refused it,
// so the next PubSubAuth (or REST call) fetches a new token; concurrent
// refusals of one session cause one fetch.
func (c *Client) InvalidatePubSubAuth(a PubSubAuth) {
	if a.sess != nil {
		c.tokens.invalidate(a.sess)
	}
}

// CallClient is the Sforce-Call-Options client this client's writes carry:
// a Change Data Capture subscriber recognises its own writes by it
// (changeOrigin, spec §9.6).
func (c *Client) CallClient() string { return c.s.callClient }
