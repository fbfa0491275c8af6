package natsx

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ReadSubject calls fn with every message stored on subject (a wildcard
// too) in stream, oldest
// first, and stops at the first error of fn. An ordered consumer streams the
// messages in large pulls and keeps no state on disk, so operator
// tools can read years of audit trail or two weeks of events cheaply.
func ReadSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(jetstream.Msg) error, opts ...ReadOption) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	for _, o := range opts {
		o(&cfg)
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	// Deleted when the read ends, not left to its inactive threshold (5
	// min): the events stream allows 1,000 consumers.
	defer DeleteOrdered(ctx, js, stream, cons)
	// The consumer's pending count, not the stream's subject list: a
	// wildcard may match a subject per person.
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		if err := fn(msg); err != nil {
			return err
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// ReadOption narrows a ReadSubject.
type ReadOption func(*jetstream.OrderedConsumerConfig)

// StoredSince reads only the messages stored at or after t (the server
// finds the first by time, so a chart of the last day does not read years).
func StoredSince(t time.Time) ReadOption {
	return func(c *jetstream.OrderedConsumerConfig) {
		if !t.IsZero() {
			c.DeliverPolicy, c.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
	}
}

// DeleteOrdered deletes an ordered consumer's current server-side consumer
// when its reader is done, rather than leaving it to its inactive
// threshold: a stream allows the server's limit of consumers (1,000 by
// default), and readers that come often (scans, drains, operator reads)
// filled it. Best effort: the server removes it once inactive anyway.
func DeleteOrdered(ctx context.Context, js jetstream.JetStream, stream string, c jetstream.Consumer) {
	info := c.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
}
