package natsx

// Dead letters are written only through DeadLetterer: one place decides
// what a copy keeps, how it is identified and what happens when it cannot
// be written.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/event"
)

// Headers of a shrunk copy.
const (
	HeaderOriginalSize   = "Optout-Original-Size"
	HeaderOriginalSHA256 = "Optout-Original-Sha256"
	HeaderBodyTruncated  = "Optout-Body-Truncated"
)

// ErrDeadLetterUnwritable: a copy could not be written after every attempt.
// Callers report it (log, metric) and never loop on it.
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
	Topology Topology
	// Attempts bounds the tries of one copy (default 5); Backoff is the
	// first wait between them (default 100 ms, doubling).
	Attempts int
	Backoff  time.Duration
}

// headerRoom is what the copy's headers may take beside the body.
const headerRoom = 8 << 10

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
		// headers belong to the original's trace.
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
	if limit := int(d.Topology.MaxMsgSize) - headerRoom; limit > 0 && len(l.Data) > limit {
		sum := sha256.Sum256(l.Data)
		msg.Header.Set(HeaderOriginalSize, strconv.Itoa(len(l.Data)))
		msg.Header.Set(HeaderOriginalSHA256, hex.EncodeToString(sum[:]))
		msg.Header.Set(HeaderBodyTruncated, "true")
		msg.Data = l.Data[:min(len(l.Data), 4<<10)]
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
	pub := Publisher{JS: d.JS, Topology: d.Topology}
	err := backoff.Retry(func() error {
		_, err := pub.Publish(ctx, msg, msgID)
		return err
	}, backoff.WithContext(backoff.WithMaxRetries(b, uint64(attempts-1)), ctx))
	if err != nil {
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
