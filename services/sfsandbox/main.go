// Command sfsandbox serves the Salesforce REST API emulator (package sandbox)
// for local development and tests, and its Pub/Sub API (gRPC) on -pubsub-listen.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/sfsandbox/Dockerfile); every log line carries it.
var version = "dev"

func main() {
	listen := flag.String("listen", ":8085", "listen address")
	orgsPath := flag.String("orgs", "orgs.yaml", "orgs configuration (YAML)")
	freePorts := flag.Bool("free-org-ports", false, "serve every org on a free port, ignoring the orgs' port (tests running side by side)")
	// 7443 is the Pub/Sub API's second documented port (api.pubsub.salesforce.com:7443).
	pubsubListen := flag.String("pubsub-listen", ":7443", `Pub/Sub API (gRPC eventbus.v1.PubSub, plaintext like the REST side) listen address; "" serves none`)
	flag.Parse()
	log := zerolog.New(os.Stderr).With().Timestamp().Str("service", "sfsandbox").Str("version", version).Logger()
	if err := run(*listen, *pubsubListen, *orgsPath, *freePorts, log); err != nil {
		log.Error().Err(err).Msg("sfsandbox stopped")
		os.Exit(1)
	}
}

func run(listen, pubsubListen, orgsPath string, freePorts bool, log zerolog.Logger) error {
	cfg, err := sandbox.LoadConfig(orgsPath)
	if err != nil {
		return err
	}
	cfg.OnCall = func(org string, c sandbox.Call) {
		log.Info().Str("org", org).Str("route", c.Route).Str("method", c.Method).Str("path", c.Path).
			Int("status", c.Status).Int("records", c.Records).Str("fault", c.FaultID).Msg("call")
	}
	sb, err := sandbox.New(cfg)
	if err != nil {
		return err
	}
	shutdownTracing, err := setupTracing(context.Background())
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(ctx)
	}()
	// Server spans join the caller's trace (traceparent), so one opt-out is
	// one trace down to the emulated Salesforce. Names carry only the method:
	// paths hold record ids. (Spans carry no query string, so no SOQL.)
	traced := func(h http.Handler) http.Handler {
		return otelhttp.NewHandler(h, "sfsandbox",
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "sfsandbox " + r.Method }))
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	servers := []*http.Server{{Handler: traced(sb), ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{ln}
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	// Each org gets its own origin, as a real org has its own My Domain:
	// instance_url is then a bare origin, which clients such as jsforce need.
	listenHost, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	ports := map[string]int{}
	for _, oc := range cfg.Orgs {
		if !freePorts {
			ports[oc.Name] = oc.Port
		}
	}
	for _, name := range sb.OrgNames() {
		addr := net.JoinHostPort(listenHost, strconv.Itoa(ports[name]))
		oln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s for org %s: %w", addr, name, err)
		}
		listeners = append(listeners, oln)
		servers = append(servers, &http.Server{Handler: traced(sb.OrgHandler(name)), ReadHeaderTimeout: 10 * time.Second})
		sb.Org(name).SetURL("http://" + displayAddr(oln.Addr()))
	}
	// Printed on purpose: this is a dev emulator and newcomers need these to
	// point services at it. Its credentials protect nothing real.
	fmt.Printf("control API http://%s/_sandbox/orgs\n", displayAddr(ln.Addr()))
	for _, name := range sb.OrgNames() {
		oc := sb.Org(name).Config()
		fmt.Printf("org %-10s token URL %s/services/oauth2/token client_id=%s client_secret=%s\n",
			name, sb.Org(name).URL(), oc.ClientID, oc.ClientSecret)
	}

	// The Pub/Sub API is one endpoint for every org, as Salesforce's is: the
	// org is the one the call's tenantid metadata names.
	var grpcSrv *grpc.Server
	var grpcLn net.Listener
	if pubsubListen != "" {
		grpcLn, err = net.Listen("tcp", pubsubListen)
		if err != nil {
			return fmt.Errorf("listen %s for the Pub/Sub API: %w", pubsubListen, err)
		}
		grpcSrv = grpc.NewServer()
		sb.RegisterPubSub(grpcSrv)
		fmt.Printf("pubsub API %s (gRPC, plaintext)\n", displayAddr(grpcLn.Addr()))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(servers)+1)
	if grpcSrv != nil {
		go func() { errc <- grpcSrv.Serve(grpcLn) }()
		// Stop, not GracefulStop: Subscribe streams never end on their own.
		defer grpcSrv.Stop()
	}
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	log.Info().Str("listen", ln.Addr().String()).Int("orgs", len(sb.OrgNames())).Msg("sfsandbox listening")
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info().Msg("shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) && serveErr == nil {
			serveErr = fmt.Errorf("shutdown: %w", err)
		}
	}
	return serveErr
}

// displayAddr is addr as a client on this machine dials it: an unspecified
// IP (":8085") becomes localhost.
func displayAddr(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", tcp.Port)
	}
	return addr.String()
}
