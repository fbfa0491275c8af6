package natsx_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProvisionIsIdempotentAndUpdatesInPlace(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)

	first, err := natsx.Provision(ctx, nc, topo)
	if err != nil {
		t.Fatal(err)
	}
	before := streamInfos(t, first.JS, topo)

	if _, err := natsx.Provision(ctx, nc, topo); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	after := streamInfos(t, first.JS, topo)
	for _, sc := range topo.Streams(1) {
		b, a := before[sc.Name], after[sc.Name]
		if !a.Created.Equal(b.Created) || a.Config.MaxAge != b.Config.MaxAge || len(a.Config.Sources) != len(sc.Sources) {
			t.Errorf("stream %s changed by a repeated provision: %+v -> %+v", sc.Name, b.Config, a.Config)
		}
		// Exactly the configured subjects: one wildcard each, none for the
		// audit stream, which only sources the ledger's.
		if !slices.Equal(a.Config.Subjects, sc.Subjects) {
			t.Errorf("stream %s subjects = %q; want %q", sc.Name, a.Config.Subjects, sc.Subjects)
		}
	}

	topo.EventsMaxAge = 48 * time.Hour
	if _, err := natsx.Provision(ctx, nc, topo); err != nil {
		t.Fatalf("provision with a changed setting: %v", err)
	}
	s, err := first.JS.Stream(ctx, topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 48*time.Hour {
		t.Errorf("events MaxAge = %s; want the updated 48h", got)
	}
	if !s.CachedInfo().Created.Equal(before[topo.EventsStream()].Created) {
		t.Error("changing a setting recreated the stream instead of updating it")
	}
	if got := s.CachedInfo().Config.MaxConsumers; got != natsx.EventsMaxConsumers {
		t.Errorf("events stream MaxConsumers = %d; want %d", got, natsx.EventsMaxConsumers)
	}
	names := first.JS.StreamNames(ctx)
	n := 0
	for name := range names.Name() {
		if _, ok := before[name]; ok {
			n++
		}
	}
	if n != len(before) {
		t.Errorf("found %d of the topology's streams; want exactly %d", n, len(before))
	}
	for _, b := range topo.Buckets(1) {
		if _, err := first.JS.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
}

func streamInfos(t *testing.T, js jetstream.JetStream, topo natsx.Topology) map[string]*jetstream.StreamInfo {
	t.Helper()
	out := map[string]*jetstream.StreamInfo{}
	for _, sc := range topo.Streams(1) {
		s, err := js.Stream(context.Background(), sc.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", sc.Name, err)
		}
		out[sc.Name] = s.CachedInfo()
	}
	return out
}

func TestConnectAuthenticatesAndReconnectsAfterARestart(t *testing.T) {
	t.Parallel()
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	opts.Username, opts.Password = "svc", "s3cret"
	srv := natsserver.RunServer(&opts)
	port := srv.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	if _, err := natsx.Connect(natsx.ConnConfig{URL: url, Name: "t", User: "svc", Password: "wrong"}, zerolog.Nop()); err == nil {
		t.Fatal("connect with a wrong password succeeded")
	}
	nc, err := natsx.Connect(natsx.ConnConfig{URL: url, Name: "t", User: "svc", Password: "s3cret"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	srv.Shutdown()
	srv.WaitForShutdown()
	opts.Port = port
	restarted := natsserver.RunServer(&opts)
	defer restarted.Shutdown()
	if err := natsx.WaitConnected(ctxT(t), nc); err != nil {
		t.Fatalf("client did not reconnect after the server restarted: %v", err)
	}
}

func TestSubjectWithExtraTokensIsRefusedAtPublish(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	_, err := p.JS.Publish(ctx, p.Topology.EventsSubject("acme")+".extra", []byte("{}"))
	if err == nil {
		t.Fatal("a subject no pusher reads was stored")
	}
}

// On a cluster a bucket with direct gets answers a read from any replica,
// including a follower that has not applied the last write yet; the
// ledger's read-then-decide steps then lost dirty markers (and so
// opt-outs) in the cluster test. Its buckets must read from the leader,
// also when they were made before with direct gets, and stay so when
// provisioned again.
func TestLedgerBucketsReadFromTheLeader(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A ledger bucket as an earlier version provisioned it: with direct gets.
	var old jetstream.KeyValueConfig
	for _, b := range topo.Buckets(1) {
		if b.Bucket == topo.LedgerBucket() {
			old = b
		}
	}
	if _, err := js.CreateKeyValue(ctx, old); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_"+topo.LedgerBucket())
	if err != nil {
		t.Fatal(err)
	}
	created := s.CachedInfo().Created
	if !s.CachedInfo().Config.AllowDirect {
		t.Fatal("nats.go no longer makes buckets with direct gets; this test needs another way to make an old bucket")
	}

	for round := range 2 {
		p, err := natsx.Provision(ctx, nc, topo)
		if err != nil {
			t.Fatalf("provision %d: %v", round+1, err)
		}
		for _, b := range []string{topo.LedgerBucket(), topo.DirtyBucket(), topo.AliasBucket(), topo.RunsBucket()} {
			s, err := js.Stream(ctx, "KV_"+b)
			if err != nil {
				t.Fatal(err)
			}
			info := s.CachedInfo()
			if info.Config.AllowDirect {
				t.Errorf("provision %d: bucket %s answers reads from any replica (AllowDirect); want its leader only", round+1, b)
			}
			if b == topo.LedgerBucket() && !info.Created.Equal(created) {
				t.Errorf("provision %d: the ledger bucket was recreated, not updated in place", round+1)
			}
		}
		// The handles Provision returns read what was just written.
		if _, err := p.Ledger.Put(ctx, "acme.sc.x", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		if e, err := p.Ledger.Get(ctx, "acme.sc.x"); err != nil || string(e.Value()) != "v1" {
			t.Errorf("provision %d: read after write: %v %v", round+1, e, err)
		}
	}
}
