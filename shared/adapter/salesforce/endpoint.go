package salesforce

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// The one rule for where a tenant's credentials may go (issue 20), applied by
// every Client and so by every service that calls Salesforce:
//
//   - the token URL and the instance URL are https; plain http only to a
//     loopback address (the sandbox in tests) or to a host the operator listed
//     in EndpointPolicy.InsecureHTTPHosts (a dev cluster's sandbox);
//   - a redirect is followed only to the same host, under the same rule, so
//     a token request's form body (the client secret) never leaves the host;
//   - the access token goes only to an instance_url on the tenant's My Domain
//     (the token URL's host) or on an allowed host pattern.

// DefaultAllowedHosts are Salesforce's own domains; an instance_url elsewhere
// is refused unless EndpointPolicy.AllowedHosts names it.
var DefaultAllowedHosts = []string{"*.my.salesforce.com", "*.salesforce.com", "*.force.com"}

// CodeUnsafeEndpoint: the token URL, a redirect or the instance_url would
// send credentials over plain http or to a host they do not belong to.
const CodeUnsafeEndpoint = "UNSAFE_ENDPOINT"

// EndpointPolicy is the operator's part of the rule.
type EndpointPolicy struct {
	// AllowedHosts are host patterns an instance_url may name besides the
	// defaults: "*.example.com" (any subdomain) or an exact host name.
	AllowedHosts []string
	// InsecureHTTPHosts are host names that may be reached over plain http.
	// Only for a development cluster's sandbox; production values never set it.
	InsecureHTTPHosts []string
}

// Warning says what the policy relaxes, for the start-up log ("" when
// nothing): plain http must never be in force silently.
func (p EndpointPolicy) Warning() string {
	if len(p.InsecureHTTPHosts) == 0 {
		return ""
	}
	return "Salesforce credentials may go over plain http to " + strings.Join(p.InsecureHTTPHosts, ", ") +
		" (development setting; never set in production)"
}

// endpointError is a refused endpoint; it becomes a PermanentTenant *Error
// whose message tells an admin what to fix.
type endpointError struct{ msg string }

func (e *endpointError) Error() string { return e.msg }

func unsafeEndpoint(op, msg string) *Error {
	return &Error{Op: op, Code: CodeUnsafeEndpoint, Message: msg, Class: PermanentTenant}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// plainAllowed says whether credentials may go to host without TLS.
func (p EndpointPolicy) plainAllowed(host string) bool {
	return isLoopback(host) || containsFold(p.InsecureHTTPHosts, host)
}

// checkTransport says why u may not carry credentials, or "".
func (p EndpointPolicy) checkTransport(what string, u *url.URL) string {
	host := u.Hostname()
	switch {
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http" && p.plainAllowed(host):
		return ""
	case u.Scheme == "http":
		return fmt.Sprintf("%s %s is plain http: credentials go only over https (plain http only to loopback, or to a development host listed in %s)",
			what, safeOrigin(u), EnvInsecureHTTPHosts)
	}
	return fmt.Sprintf("%s %s: want an https URL", what, safeOrigin(u))
}

// checkInstance says why the access token may not go to instance, or "".
func (p EndpointPolicy) checkInstance(instance *url.URL, myDomain string) string {
	if msg := p.checkTransport("instance_url", instance); msg != "" {
		return msg
	}
	if p.hostAllowed(instance.Hostname(), myDomain) {
		return ""
	}
	return fmt.Sprintf("instance_url %s is neither the tenant's My Domain (%s) nor an allowed Salesforce host (%s); "+
		"check the tenant's token_url, or add the org's instance host to %s",
		safeOrigin(instance), myDomain, strings.Join(append(append([]string{}, DefaultAllowedHosts...), p.AllowedHosts...), ", "), EnvAllowedHosts)
}

// hostAllowed says whether the tenant's access token may go to host: its
// My Domain, Salesforce's own domains or an operator-allowed pattern.
func (p EndpointPolicy) hostAllowed(host, myDomain string) bool {
	host = strings.ToLower(host)
	if host == strings.ToLower(myDomain) {
		return true
	}
	for _, pat := range append(append([]string{}, DefaultAllowedHosts...), p.AllowedHosts...) {
		if hostMatches(pat, host) {
			return true
		}
	}
	return false
}

// checkPubSub says why the access token may not go to the Pub/Sub API at
// addr (host:port, gRPC; plaintext: without TLS), or "": the same rule as
// for the instance_url, with TLS in place of https.
func (p EndpointPolicy) checkPubSub(addr string, plaintext bool, myDomain string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Sprintf("Pub/Sub API address %q: want host:port", addr)
	}
	if plaintext && !p.plainAllowed(host) {
		return fmt.Sprintf("Pub/Sub API %s without TLS: credentials go only over TLS (plaintext only to loopback, or to a development host listed in %s)",
			addr, EnvInsecureHTTPHosts)
	}
	if !p.hostAllowed(host, myDomain) && !(plaintext && isLoopback(host) && isLoopback(myDomain)) {
		return fmt.Sprintf("Pub/Sub API host %s is neither the tenant's My Domain (%s) nor an allowed Salesforce host (%s); add it to %s",
			host, myDomain, strings.Join(append(append([]string{}, DefaultAllowedHosts...), p.AllowedHosts...), ", "), EnvAllowedHosts)
	}
	return ""
}

// hostMatches: "*.example.com" matches any subdomain (not example.com
// itself), anything else the exact host.
func hostMatches(pattern, host string) bool {
	pattern = strings.ToLower(strings.TrimSpace(pattern))
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasPrefix(suffix, ".") && strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern != "" && host == pattern
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(strings.TrimSpace(v), s) {
			return true
		}
	}
	return false
}

// safeOrigin is scheme://host[:port] of u: no user info, path or query.
func safeOrigin(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
}

// checkRedirect follows a redirect only to the original request's host and
// only under the transport rule: Go's client re-sends a 307/308's body, which
// for the token endpoint holds the client secret.
func (p EndpointPolicy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	orig := via[0].URL
	if !strings.EqualFold(req.URL.Host, orig.Host) {
		return &endpointError{msg: fmt.Sprintf("%s redirected to another host (%s): not followed, so no credential leaves the host; check the tenant's token_url",
			safeOrigin(orig), safeOrigin(req.URL))}
	}
	if msg := p.checkTransport("redirect target", req.URL); msg != "" {
		return &endpointError{msg: msg}
	}
	return nil
}

// Variables that configure the policy, read by sfcreds.PolicyFromEnv.
const (
	EnvAllowedHosts      = "OPTOUT_SF_ALLOWED_HOSTS"
	EnvInsecureHTTPHosts = "OPTOUT_SF_INSECURE_HTTP_HOSTS"
)
