// Package pubsub is optout-sync's client for Salesforce's Pub/Sub API (gRPC
// eventbus.v1.PubSub, spec §9): GetTopic, GetSchema (parsed Avro schemas
// cached by schema id) and Subscribe, a flow-controlled stream of decoded
// Change Data Capture events. It is the layer a per-tenant CDC subscriber is
// built on; what to do with the events (and where to store replay ids) is
// the subscriber's.
//
// The tenant's session comes from its salesforce.Client (one token for REST
// and Pub/Sub), and goes only where that client's endpoint policy lets it
// (salesforce.Client.PubSubEndpoint): over TLS to Salesforce, plaintext only
// to loopback or a listed development host. Every failure is a
// *salesforce.Error classified by salesforce.ClassifyGRPC; callers branch on
// salesforce.ClassOf(err) (ReplayLost for a refused replay id).
package pubsub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/optout-sync/optout-sync/shared/adapter/pubsub/pubsubapi"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// DefaultAddr is Salesforce's global Pub/Sub endpoint on its second
// documented port (spec §9.1; :443 works too).
const DefaultAddr = "api.pubsub.salesforce.com:7443"

// Config says where the Pub/Sub API is.
type Config struct {
	// Addr is host:port (default DefaultAddr).
	Addr string
	// Plaintext dials without TLS: only to loopback (the sandbox in tests)
	// or a host in OPTOUT_SF_INSECURE_HTTP_HOSTS, as the salesforce endpoint
	// policy decides; anything else is refused before a token is fetched.
	Plaintext bool
	// TLS replaces the default TLS configuration (system roots, TLS 1.2+).
	TLS *tls.Config
	// MaxRecvMsgBytes caps one response (default gRPC's 4 MiB). The spec
	// gives events up to 1 MB and responses up to 100 events but no response
	// size: a response over the cap fails as Retryable RESOURCE_EXHAUSTED, so
	// a tenant with large events needs a higher cap or a smaller Batch.
	MaxRecvMsgBytes int
}

// Client is one tenant's Pub/Sub API client. It is safe for concurrent use;
// each Subscription is used by one goroutine.
type Client struct {
	sf  *salesforce.Client
	ep  salesforce.PubSubEndpoint
	cc  *grpc.ClientConn
	api pubsubapi.PubSubClient

	mu      sync.Mutex
	schemas map[string]*Schema
}

// New checks cfg's address against sf's endpoint policy and prepares the
// connection (gRPC connects on first use). sf supplies the tenant's token,
// instance URL and org id. A refused address is a PermanentTenant
// *salesforce.Error (CodeUnsafeEndpoint); nothing has been fetched or sent.
func New(sf *salesforce.Client, cfg Config) (*Client, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ep, err := sf.PubSubEndpoint(addr, cfg.Plaintext)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if !ep.Plaintext() {
		tc := cfg.TLS
		if tc == nil {
			host, _, _ := net.SplitHostPort(addr)
			tc = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if cfg.MaxRecvMsgBytes > 0 {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgBytes)))
	}
	cc, err := grpc.NewClient(ep.Addr(), opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub: dial %s: %w", ep.Addr(), err)
	}
	return &Client{sf: sf, ep: ep, cc: cc, api: pubsubapi.NewPubSubClient(cc), schemas: map[string]*Schema{}}, nil
}

// Close closes the connection; live subscriptions end.
func (c *Client) Close() error { return c.cc.Close() }

// withAuth returns ctx carrying the session's metadata (spec §9.1).
func (c *Client) withAuth(ctx context.Context) (context.Context, salesforce.PubSubAuth, error) {
	a, err := c.sf.PubSubAuth(ctx, c.ep)
	if err != nil {
		return nil, a, err
	}
	return metadata.AppendToOutgoingContext(ctx, "accesstoken", a.AccessToken, "instanceurl", a.InstanceURL, "tenantid", a.TenantID), a, nil
}

// unary runs one RPC; a refused session is refreshed once and the call
// repeated once, as the REST client does on a 401.
func (c *Client) unary(ctx context.Context, op string, call func(ctx context.Context, opts ...grpc.CallOption) error) error {
	for attempt := 0; ; attempt++ {
		actx, a, err := c.withAuth(ctx)
		if err != nil {
			return err
		}
		var trailer metadata.MD
		err = call(actx, grpc.Trailer(&trailer))
		if err == nil {
			return nil
		}
		e := rpcError(op, err, trailer)
		if e.Class == salesforce.Auth && attempt == 0 {
			c.sf.InvalidatePubSubAuth(a)
			continue
		}
		return e
	}
}

// rpcError classifies a failed RPC by its status and error-code trailer.
func rpcError(op string, err error, trailer metadata.MD) *salesforce.Error {
	var se *salesforce.Error
	if errors.As(err, &se) {
		return se
	}
	st := status.Convert(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		st = status.FromContextError(err)
	}
	code := ""
	if v := trailer.Get("error-code"); len(v) > 0 {
		code = v[0]
	}
	e := salesforce.NewGRPCError(op, st.Code(), code, st.Message())
	e.Err = err
	return e
}

// Topic is GetTopic's answer.
type Topic struct {
	Name         string
	TenantGUID   string
	CanSubscribe bool
	CanPublish   bool
	// SchemaID is the topic's current schema ("" for a topic carrying
	// several entities: each event names its own).
	SchemaID string
}

// GetTopic describes a topic: whether the tenant may subscribe to it and its
// current schema. An entity not selected for CDC is NOT_FOUND
// (PermanentTenant).
func (c *Client) GetTopic(ctx context.Context, topic string) (Topic, error) {
	var info *pubsubapi.TopicInfo
	err := c.unary(ctx, "get topic", func(ctx context.Context, opts ...grpc.CallOption) error {
		var err error
		info, err = c.api.GetTopic(ctx, &pubsubapi.TopicRequest{TopicName: topic}, opts...)
		return err
	})
	if err != nil {
		return Topic{}, err
	}
	return Topic{Name: info.GetTopicName(), TenantGUID: info.GetTenantGuid(), CanSubscribe: info.GetCanSubscribe(),
		CanPublish: info.GetCanPublish(), SchemaID: info.GetSchemaId()}, nil
}

// GetSchema returns the parsed writer schema of id, fetched once per client:
// a schema id is a fingerprint, so its schema never changes.
func (c *Client) GetSchema(ctx context.Context, id string) (*Schema, error) {
	c.mu.Lock()
	s := c.schemas[id]
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	var info *pubsubapi.SchemaInfo
	err := c.unary(ctx, "get schema", func(ctx context.Context, opts ...grpc.CallOption) error {
		var err error
		info, err = c.api.GetSchema(ctx, &pubsubapi.SchemaRequest{SchemaId: id}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	s, err = parseSchema(id, info.GetSchemaJson())
	if err != nil {
		return nil, &salesforce.Error{Op: "get schema", Code: salesforce.CodeUndecodableEvent,
			Message: "schema " + id + " is not a usable change event schema", Class: salesforce.PermanentTenant, Err: err}
	}
	c.mu.Lock()
	c.schemas[id] = s
	c.mu.Unlock()
	return s, nil
}
