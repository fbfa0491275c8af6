// Package deadletter keeps what can never be applied: DeadLetterer writes
// the copies, DLQ lists, counts, replays and deletes them.
//
// Dead letters are written only through DeadLetterer: one place decides
// what a copy keeps, how it is identified and what happens when it cannot
// be written.
package deadletter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/telemetry"
)

// Headers of a shrunk copy.
const (
	HeaderOriginalSize   = "Optout-Original-Size"
	HeaderOriginalSHA256 = "Optout-Original-Sha256"
	HeaderBodyTruncated  = "Optout-Body-Truncated"
)

// ErrDeadLetterUnwritable: a copy could not be written after every attempt.
// Callers report it (log, metric) and never loop on it. A write its context
// stopped is not unwritable and returns the context's error instead.
var ErrDeadLetterUnwritable = errors.New("dead letter could not be written")

// Letter is one thing that can never be applied.
type Letter struct {
	Tenant  string // an invalid token goes to the "unknown" DLQ subject
	Subject string // where the original was
	Seq     uint64 // its stream sequence, 0 if none
	Header  nats.Header
	Data    []byte
	Cause   error
	Code    string
	Class   string
}

// DeadLetterer writes dead letters for a topology.
type DeadLetterer struct {
	JS       jetstream.JetStream
	Topology natsx.Topology
	// Attempts bounds the tries of one copy (default 5); Backoff is the
	// first wait between them (default 100 ms, doubling).
	Attempts int
	Backoff  time.Duration
}

// headerRoom is what a copy gains on its way out beyond the headers it
// is built with: its Nats-Msg-Id, trace context and the shrink headers.
const headerRoom = 8 << 10

// shrunkBody is how much of an oversized body a shrunk copy keeps.
const shrunkBody = 4 << 10

// bodyRoom is the largest body that fits beside header in one message: the
// smaller of the DLQ stream's MaxMsgSize and the server's max payload, less
// the header as measured (an original may carry large headers of its own)
// and headerRoom.
func (d DeadLetterer) bodyRoom(header nats.Header) int {
	limit := int(d.Topology.MaxMsgSize)
	if nc := d.JS.Conn(); nc != nil {
		if mp := int(nc.MaxPayload()); mp > 0 && (limit <= 0 || mp < limit) {
			limit = mp
		}
	}
	if limit <= 0 {
		return math.MaxInt
	}
	return limit - wireHeaderLen(header) - headerRoom
}

// wireHeaderLen is the size of h in a NATS message.
func wireHeaderLen(h nats.Header) int {
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// Write copies l to its tenant's DLQ subject.
func (d DeadLetterer) Write(ctx context.Context, l Letter) error {
	token := l.Tenant
	if !event.ValidTenant(token) {
		token = "unknown"
	}
	msg := nats.NewMsg(d.Topology.DLQSubject(token))
	for k, v := range l.Header {
		// Nats-* headers steer the original's publish (dedup id, expected
		// stream or sequence) and would refuse or drop the copy; trace
		// headers are the copy's own publish span's, in the original's
		// trace (below).
		if strings.HasPrefix(k, "Nats-") || k == "traceparent" || k == "tracestate" {
			continue
		}
		msg.Header[k] = v
	}
	cause := "unknown"
	if l.Cause != nil {
		cause = oneLine(l.Cause.Error())
	}
	msg.Header.Set(event.HeaderError, cause)
	msg.Header.Set(event.HeaderErrorCode, l.Code)
	msg.Header.Set(HeaderErrorClass, l.Class)
	msg.Header.Set(HeaderOriginalSubject, l.Subject)
	msgID := ""
	if l.Seq > 0 {
		msg.Header.Set(HeaderStreamSequence, strconv.FormatUint(l.Seq, 10))
		msgID = "dlq-" + d.Topology.EventsStream() + "-" + strconv.FormatUint(l.Seq, 10)
	}
	msg.Data = l.Data
	if room := d.bodyRoom(msg.Header); len(l.Data) > room {
		sum := sha256.Sum256(l.Data)
		msg.Header.Set(HeaderOriginalSize, strconv.Itoa(len(l.Data)))
		msg.Header.Set(HeaderOriginalSHA256, hex.EncodeToString(sum[:]))
		msg.Header.Set(HeaderBodyTruncated, "true")
		msg.Data = l.Data[:max(min(shrunkBody, room), 0)]
	}
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = d.Backoff
	if b.InitialInterval <= 0 {
		b.InitialInterval = 100 * time.Millisecond
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// A caller with no span of its own still files the copy in the
		// original's trace, so the copy's trace id leads to the original.
		ctx = telemetry.Extract(ctx, l.Header)
	}
	pub := natsx.Publisher{JS: d.JS, Topology: d.Topology}
	err := backoff.Retry(func() error {
		_, err := pub.Publish(ctx, msg, msgID)
		return err
	}, backoff.WithContext(backoff.WithMaxRetries(b, uint64(attempts-1)), ctx))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// Stopped by the caller, not refused: not for giving up on.
			return fmt.Errorf("dead letter to %s abandoned: %w", msg.Subject, cerr)
		}
		return fmt.Errorf("%w after %d attempts (%s): %w", ErrDeadLetterUnwritable, attempts, msg.Subject, err)
	}
	return nil
}

func oneLine(s string) string {
	s = strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}
