// Command demo runs a local optout-sync: the Salesforce sandbox with seeded
// orgs, a pusher, the admin service (the settings page, with a login made
// for the run) and a publisher sending a steady stream of opt-outs, and
// prints progress until Ctrl-C. It uses the production subjects and streams
// (no namespace), so the README's `nats pub optout.v1.events.<tenant> …`
// reaches it; at start it prints such a line for a real seeded record of
// each org. The benchmarks live in bench/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/demo/publisher"
	"github.com/optout-sync/optout-sync/services/demo/stack"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// tenants are the demo's orgs: acme writes the sales opt-out field,
// globex the standard Email Opt Out.
var tenants = []string{"acme", "globex"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// No configured secret is printed, whichever error quotes it (issue 20).
	secrets := config.SecretsIn(os.Environ())
	stdout, stderr := logx.NewScrubbingWriter(os.Stdout, secrets), logx.NewScrubbingWriter(os.Stderr, secrets)
	telemetry.SetDiagnosticsOutput(stderr)
	if err := run(ctx, os.Args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(stderr, "demo:", err)
		os.Exit(1)
	}
}

// run is the whole demo until ctx ends; it returns once the pusher has
// settled its batches in flight and every connection is closed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server; an embedded one starts when none answers or it is older than "+natsx.MinServerVersion)
	sbListen := fs.String("sandbox", "127.0.0.1:8085", "sandbox listen address")
	admin := fs.String("admin", "127.0.0.1:9090", "pusher admin address (/metrics)")
	adminPage := fs.String("admin-page", "127.0.0.1:9091", "admin service address: the settings page under /admin/")
	rate := fs.Int("rate", 20, "opt-outs published per second (0: none, only what you publish)")
	records := fs.Int("records", 2000, "records seeded per org")
	latency := fs.Duration("latency", 50*time.Millisecond, "sandbox latency per call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The same email-hash key as the services when one is configured; the
	// demo's own hashes need no warning when it is not.
	l := config.FromEnv()
	hashKey := logx.EmailHashKeyFromEnv(l)
	if err := l.Err(); err != nil {
		return err
	}
	logx.SetEmailHashKey(hashKey)

	log := logx.New("demo", stderr).Level(zerolog.WarnLevel)
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: *natsURL, SandboxListen: *sbListen, AdminListen: *admin, PageListen: *adminPage,
		Tenants: tenants, RecordsPerOrg: *records, SandboxLatency: *latency, Log: log,
	})
	if err != nil {
		return err
	}
	// Closed only after the pusher and the publisher have stopped (below):
	// closing NATS under a pusher still settling its batches fails their acks.
	defer s.Close()

	where := "the machine's NATS at " + s.NC.ConnectedUrl()
	if s.Embedded {
		where = "an embedded JetStream server at " + s.NC.ConnectedUrl()
		if s.PassedOver != "" {
			where += " (not " + *natsURL + ": " + s.PassedOver + ")"
		}
	}
	fmt.Fprintf(stdout, "optout-sync demo: %s; sandbox %s (orgs acme: sales field, globex: Email Opt Out); metrics http://%s/metrics\n",
		where, s.SandboxURL, s.Pusher.Admin.Addr())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Bound first, so the printed URL is the one it serves.
	if err := s.Admin.Listen(runCtx); err != nil {
		return fmt.Errorf("admin service: %w", err)
	}
	adminDone := make(chan error, 1)
	go func() { adminDone <- s.Admin.Run(runCtx) }()
	fmt.Fprintf(stdout, "admin page http://%s/admin/ : sign in as %q with the password in %s\n  (a login made for this run; e.g. curl -u %s:$(cat %s) http://%s/admin/tenants/acme)\n",
		s.Admin.Admin.Addr(), s.AdminUser, s.AdminPasswordFile, s.AdminUser, s.AdminPasswordFile, s.Admin.Admin.Addr())

	pub := &publisher.Publisher{
		Pub: natsx.Publisher{JS: s.Pusher.Service.JS, Topology: s.Topology}, Tenants: tenants,
		Records: map[string][]sandbox.Record{}, NoIDShare: 0.05, InvalidShare: 0.02,
	}
	started := time.Now().UTC()
	fmt.Fprintln(stdout, "\nSend an opt-out yourself (nats CLI: go install github.com/nats-io/natscli/nats@v0.5.0):")
	for _, t := range tenants {
		recs := s.Sandbox.Org(t).Records()
		if err := seedOptedOut(ctx, s.Pusher.Service.Ledger, pub, t, recs); err != nil {
			return err
		}
		i := untouched(ctx, s.Pusher.Service.Ledger, t, recs)
		r := recs[i]
		// The publisher leaves this record alone, so what changes it is you.
		pub.Records[t] = append(recs[:i:i], recs[i+1:]...)
		fmt.Fprintf(stdout, "\n  # %s: %s %s (%s)\n", t, r.Type, r.ID, fieldOf(t))
		fmt.Fprintf(stdout, "  %s\n", natsPub(t, r, started, s.NC.ConnectedUrl(), s.Embedded))
		fmt.Fprintf(stdout, "  # then watch it land:\n")
		fmt.Fprintf(stdout, "  %s\n", personShow(t, r, s.NC.ConnectedUrl(), s.Embedded))
		fmt.Fprintf(stdout, "  curl -s %s/_sandbox/orgs/%s/records/%s\n", s.SandboxURL, t, r.ID)
	}
	fmt.Fprintln(stdout)
	if *rate > 0 {
		fmt.Fprintf(stdout, "publishing %d opt-outs/s (5%% without a Salesforce id, 2%% malformed); Ctrl-C to stop\n", *rate)
	} else {
		fmt.Fprintln(stdout, "publishing nothing by itself (-rate 0); Ctrl-C to stop")
	}

	since, err := eventsStored(ctx, s)
	if err != nil {
		return err
	}
	pusherDone := make(chan error, 1)
	go func() {
		err := s.Pusher.Run(runCtx)
		cancel() // a pusher that stops on its own ends the demo
		pusherDone <- err
	}()
	var wg sync.WaitGroup
	if *rate > 0 {
		wg.Go(func() { _ = pub.Run(runCtx, *rate) })
	}
	progress(runCtx, stdout, s, pub, since)
	wg.Wait()
	// The pusher returns once its batches in flight are settled; only then
	// are the connections closed (deferred above).
	if err := <-pusherDone; err != nil && ctx.Err() == nil {
		return fmt.Errorf("pusher: %w", err)
	}
	if err := <-adminDone; err != nil {
		return fmt.Errorf("admin service: %w", err)
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}

// untouched is the index of the first record the ledger knows nothing
// about: on a long-lived NATS a previous demo already opted out the first
// records, and the ledger (rightly) does not push an opt-out it has
// confirmed. With a fresh NATS this is the first seeded record, as in README.
func untouched(ctx context.Context, l *ledger.Ledger, t string, recs []sandbox.Record) int {
	for i, r := range recs {
		if _, err := l.Get(ctx, optout.Key(t, salesConnectID(r), r.ID)); errors.Is(err, ledger.ErrNotFound) {
			return i
		}
	}
	return 0
}

func salesConnectID(r sandbox.Record) string { return "sc-" + r.ID }

func fieldOf(t string) string {
	if t == tenants[0] {
		return "sales opt-out field"
	}
	return "Email Opt Out"
}

// natsPub is a ready-to-paste publish of one opt-out in the event contract
// (protojson). Its event id carries the demo's start time: JetStream drops a
// Nats-Msg-Id it has seen within 10 minutes, and the ledger a replayed one.
func natsPub(t string, r sandbox.Record, started time.Time, url string, embedded bool) string {
	id := fmt.Sprintf("evt-%s-%s", t, started.Format("20060102T150405"))
	type person struct {
		SalesConnectID string `json:"salesConnectId"`
		SalesforceID   string `json:"salesforceId"`
		ObjectType     string `json:"objectType"`
	}
	// A struct, not protojson: protojson varies its spacing on purpose, and
	// README shows this exact text.
	ev := struct {
		EventID    string `json:"eventId"`
		TenantID   string `json:"tenantId"`
		Person     person `json:"person"`
		Action     string `json:"action"`
		OccurredAt string `json:"occurredAt"`
		Source     string `json:"source"`
		Reason     string `json:"reason"`
	}{id, t, person{salesConnectID(r), r.ID, map[string]string{"Contact": "CONTACT", "Lead": "LEAD"}[r.Type]},
		"UNSUBSCRIBE", started.Format(time.RFC3339), "EMAIL_LINK", "clicked unsubscribe"}
	b, _ := json.Marshal(ev) // strings only: cannot fail
	server := ""
	if embedded {
		server = " -s " + url
	}
	return fmt.Sprintf("nats%s pub optout.v1.events.%s -H 'Content-Type:application/json' -H 'Nats-Msg-Id:%s' '%s'", server, t, id, b)
}

func personShow(t string, r sandbox.Record, url string, embedded bool) string {
	server := ""
	if embedded {
		server = " --server " + url
	}
	return fmt.Sprintf("go run ./services/optoutctl%s person show %s %s", server, t, r.ID)
}

func progress(ctx context.Context, stdout io.Writer, s *stack.Stack, pub *publisher.Publisher, since uint64) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	m := s.Pusher.Service.Metrics
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "\nstopping: settling the batches in flight")
			return
		case <-tick.C:
			t, err := count(ctx, s, pub, since)
			if err != nil {
				continue // NATS briefly unreachable: the next tick tries again
			}
			p50, p99 := percentiles(m.Latencies())
			fmt.Fprintf(stdout, "%s  salesforce calls %5d  latency p50 %-8s p99 %s\n",
				t, m.Calls.Load(), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		}
	}
}

// percentiles returns p50 and p99 of ds.
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}

// tally is where every published opt-out went: the parts add up to
// Published, InFlight being those not settled yet.
type tally struct {
	// Published counts the events stored since the demo started, yours
	// included.
	Published int64
	// Pushed counts persons written to Salesforce, Parked events without a
	// Salesforce id, DeadLettered malformed ones (the pusher's counts).
	Pushed, Parked, DeadLettered int64
	// AlreadyOptedOut counts the repeats of a person already opted out,
	// which need no write (the publisher's count).
	AlreadyOptedOut int64
}

// InFlight is what is published and not settled yet.
func (t tally) InFlight() int64 {
	return t.Published - t.Pushed - t.AlreadyOptedOut - t.Parked - t.DeadLettered
}

func (t tally) String() string {
	return fmt.Sprintf("published %6d = pushed %6d + already opted out %5d + parked %4d + dead-lettered %4d + in flight %4d",
		t.Published, t.Pushed, t.AlreadyOptedOut, t.Parked, t.DeadLettered, t.InFlight())
}

func count(ctx context.Context, s *stack.Stack, pub *publisher.Publisher, since uint64) (tally, error) {
	stored, err := eventsStored(ctx, s)
	if err != nil {
		return tally{}, err
	}
	m := s.Pusher.Service.Metrics
	return tally{
		Published: int64(stored - since),
		Pushed:    m.Pushed.Load(), Parked: m.Parked.Load(), DeadLettered: m.DeadLettered.Load(),
		AlreadyOptedOut: pub.AlreadyOptedOut.Load(),
	}, nil
}

// eventsStored is the events stream's last sequence: every event stored
// since a point is the difference (a duplicate Nats-Msg-Id is not stored).
func eventsStored(ctx context.Context, s *stack.Stack) (uint64, error) {
	st, err := s.Pusher.Service.JS.Stream(ctx, s.Topology.EventsStream())
	if err != nil {
		return 0, fmt.Errorf("events stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("events stream: %w", err)
	}
	return info.State.LastSeq, nil
}

// seedOptedOut tells the publisher which of the tenant's records an earlier
// demo on this NATS opted out: their next event is a repeat.
func seedOptedOut(ctx context.Context, l *ledger.Ledger, pub *publisher.Publisher, t string, recs []sandbox.Record) error {
	for _, r := range recs {
		it, err := l.Get(ctx, optout.Key(t, salesConnectID(r), r.ID))
		e := it.Entry
		switch {
		case errors.Is(err, ledger.ErrNotFound):
		case err != nil:
			return fmt.Errorf("ledger: %w", err)
		case e.OptedOut:
			pub.OptedOut(t, r.ID)
		}
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
