package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// AuditRecord is one change of an entry, as the audit stream holds it: a
// server-side copy of the ledger write itself (the audit stream sources the
// ledger bucket's stream), so no change can be stored without its record.
type AuditRecord struct {
	Key      string       `json:"key"`
	Revision uint64       `json:"revision"`
	At       time.Time    `json:"at"`
	Entry    optout.Entry `json:"entry"`
	// Fence is the fencing token of the reconcile run that wrote it (0 for
	// ingest and the push).
	Fence uint64 `json:"reconcileFence,omitempty"`
}

// ReadAudit calls fn with every audit record of tenant, oldest first: the
// person histories operators and compliance reviewers read. It stops at
// the first error of fn. A record that cannot be decoded is an error, never
// skipped: a history with silent gaps is worse than none.
// Options narrow the read (natsx.StoredSince).
func ReadAudit(ctx context.Context, js jetstream.JetStream, t natsx.Topology, tenant string, fn func(AuditRecord) error, opts ...natsx.ReadOption) error {
	return readAudit(ctx, js, t, "$KV."+t.LedgerBucket()+"."+tenant+".>", fn, opts...)
}

// ReadPersonAudit is ReadAudit for the entry under one key.
func ReadPersonAudit(ctx context.Context, js jetstream.JetStream, t natsx.Topology, key string, fn func(AuditRecord) error) error {
	return readAudit(ctx, js, t, "$KV."+t.LedgerBucket()+"."+key, fn)
}

func readAudit(ctx context.Context, js jetstream.JetStream, t natsx.Topology, subject string, fn func(AuditRecord) error, opts ...natsx.ReadOption) error {
	prefix := "$KV." + t.LedgerBucket() + "."
	stream := t.AuditStream()
	return natsx.ReadSubject(ctx, js, stream, subject, func(msg jetstream.Msg) error {
		switch msg.Headers().Get("KV-Operation") {
		case "DEL", "PURGE":
			return nil
		}
		var f stored
		if err := json.Unmarshal(msg.Data(), &f); err != nil {
			seq := uint64(0)
			if md, mdErr := msg.Metadata(); mdErr == nil {
				seq = md.Sequence.Stream
			}
			return fmt.Errorf("audit record at %s sequence %d: %w", stream, seq, err)
		}
		return fn(AuditRecord{
			Key:      strings.TrimPrefix(msg.Subject(), prefix),
			Revision: sourceSequence(msg.Headers().Get("Nats-Stream-Source")),
			At:       f.ChangedAt,
			Entry:    f.Entry,
			Fence:    f.Fence,
		})
	}, opts...)
}

// WaitAudited returns once the audit stream holds a copy of every ledger
// change stored before the call, or with ctx's error when ctx ends first. The
// server copies changes asynchronously (milliseconds behind; a newly created
// audit stream starts copying after a set-up of about 150 ms on nats-server
// 2.15), so a reader that must see the whole trail, such as a compliance
// lookup that follows merges through it, waits for it first.
func WaitAudited(ctx context.Context, js jetstream.JetStream, t natsx.Topology) error {
	ls, err := js.Stream(ctx, "KV_"+t.LedgerBucket())
	if err != nil {
		return fmt.Errorf("ledger stream: %w", err)
	}
	want := ls.CachedInfo().State.LastSeq
	if want == 0 {
		return nil
	}
	as, err := js.Stream(ctx, t.AuditStream())
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	for {
		// The newest record names the ledger revision it copies; the source
		// copies in order, so every earlier one is there too.
		msg, err := as.GetLastMsgForSubject(ctx, "$KV."+t.LedgerBucket()+".>")
		switch {
		case err == nil:
			if sourceSequence(msg.Header.Get("Nats-Stream-Source")) >= want {
				return nil
			}
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("audit stream: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("audit stream behind the ledger's revision %d: %w", want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sourceSequence reads the ledger revision from the header JetStream puts
// on a sourced message ("<stream> <sequence> …"); 0 when absent.
func sourceSequence(h string) uint64 {
	fields := strings.Fields(h)
	if len(fields) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(fields[1], 10, 64)
	return n
}
