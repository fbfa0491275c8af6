package sandbox

import (
	"net"
	"net/http"
	"net/http/httptest"

	"google.golang.org/grpc"
)

// Local is a sandbox served on loopback for tests and the demo: the control
// API and login host on one port, every org on a port of its own, and the
// Pub/Sub API (gRPC, plaintext) on one more.
type Local struct {
	// Control serves Sandbox.ServeHTTP: /_sandbox/ and the login-host token endpoint.
	Control *httptest.Server
	// Orgs serves each org at the root of its origin, by org name.
	Orgs map[string]*httptest.Server

	pubsub   *grpc.Server
	pubsubLn net.Listener
}

// ServeLocal starts sb on loopback and tells each org its URL. wrap, when
// not nil, wraps every handler (e.g. for tracing). Like httptest, it panics
// when it cannot listen.
func ServeLocal(sb *Sandbox, wrap func(http.Handler) http.Handler) *Local {
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	l := &Local{Control: httptest.NewServer(wrap(sb)), Orgs: map[string]*httptest.Server{}}
	for _, name := range sb.OrgNames() {
		srv := httptest.NewServer(wrap(sb.OrgHandler(name)))
		sb.Org(name).SetURL(srv.URL)
		l.Orgs[name] = srv
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("sandbox: Pub/Sub listen: " + err.Error())
	}
	l.pubsubLn = ln
	l.pubsub = grpc.NewServer()
	sb.RegisterPubSub(l.pubsub)
	go func() { _ = l.pubsub.Serve(ln) }()
	return l
}

// URL is the control API and login-host origin.
func (l *Local) URL() string { return l.Control.URL }

// OrgURL is the named org's origin: its instance_url and My Domain, the
// token URL the services are given ("" when unknown).
func (l *Local) OrgURL(name string) string {
	if srv := l.Orgs[name]; srv != nil {
		return srv.URL
	}
	return ""
}

// PubSubAddr is the Pub/Sub API's host:port (gRPC without TLS), the
// stand-in for api.pubsub.salesforce.com:7443.
func (l *Local) PubSubAddr() string { return l.pubsubLn.Addr().String() }

// Close stops every server.
func (l *Local) Close() {
	// Stop, not GracefulStop: Subscribe streams never end on their own.
	l.pubsub.Stop()
	l.Control.Close()
	for _, srv := range l.Orgs {
		srv.Close()
	}
}
