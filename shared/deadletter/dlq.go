package deadletter

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// Headers of a DLQ copy besides event.HeaderError and event.HeaderErrorCode.
// The pusher writes the first three (services/pusher/push uses the same
// spellings); a replay marks the republished event with the fourth.
const (
	HeaderErrorClass      = "Optout-Error-Class"
	HeaderOriginalSubject = "Optout-Original-Subject"
	HeaderStreamSequence  = "Optout-Stream-Sequence"
	HeaderReplayedFrom    = "Optout-Replayed-From"
)

// ErrDeadLetterNotFound means no dead letter has that sequence in that tenant.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// DeadLetter is one message of the DLQ stream, with the reason the pusher
// (or the validator) gave.
type DeadLetter struct {
	Seq             uint64    `json:"seq"`
	Tenant          string    `json:"tenant"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	Code            string    `json:"code"`
	Class           string    `json:"class,omitempty"`
	Reason          string    `json:"reason"`
	OriginalSubject string    `json:"originalSubject,omitempty"`
	OriginalSeq     uint64    `json:"originalSeq,omitempty"`
	// EventID is read leniently from the body, so it is shown even for an
	// event that failed validation; "" when the body is unreadable.
	EventID     string      `json:"eventId,omitempty"`
	ContentType string      `json:"contentType,omitempty"`
	Header      nats.Header `json:"-"`
	Data        []byte      `json:"-"`
}

// DLQ reads and settles dead letters. It binds to the streams the services
// provisioned and never creates or reconfigures anything.
type DLQ struct {
	JS       jetstream.JetStream
	Topology natsx.Topology
}

func (d DLQ) stream(ctx context.Context) (jetstream.Stream, error) {
	s, err := d.JS.Stream(ctx, d.Topology.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("dlq stream %s: %w", d.Topology.DLQStream(), err)
	}
	return s, nil
}

// tenantOf returns the tenant token of a DLQ subject.
func (d DLQ) tenantOf(subject string) string {
	return strings.TrimPrefix(subject, d.Topology.DLQSubject(""))
}

func (d DLQ) filter(tenant string) string {
	if tenant == "" {
		return d.Topology.DLQSubject("*")
	}
	return d.Topology.DLQSubject(tenant)
}

// List calls fn for each dead letter of tenant ("" for every tenant), oldest
// first. It walks the stream with direct gets, one message per request,
// which suits a DLQ (small by design) and leaves no consumer behind.
func (d DLQ) List(ctx context.Context, tenant string, fn func(DeadLetter) error) error {
	if tenant != "" && !event.ValidTenant(tenant) {
		return fmt.Errorf("dlq list: tenant %q is not a valid tenant id", tenant)
	}
	s, err := d.stream(ctx)
	if err != nil {
		return err
	}
	filter := d.filter(tenant)
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dlq list at sequence %d: %w", seq, err)
		}
		if err := fn(d.deadLetter(m)); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
}

// Get returns one dead letter of tenant.
func (d DLQ) Get(ctx context.Context, tenant string, seq uint64) (DeadLetter, error) {
	s, err := d.stream(ctx)
	if err != nil {
		return DeadLetter{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("tenant %s sequence %d: %w", tenant, seq, ErrDeadLetterNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dlq get %d: %w", seq, err)
	}
	// A sequence of another tenant is "not found": an operator scoped to a
	// tenant never acts on another tenant's messages by a typo.
	if m.Subject != d.Topology.DLQSubject(tenant) {
		return DeadLetter{}, fmt.Errorf("tenant %s sequence %d: %w", tenant, seq, ErrDeadLetterNotFound)
	}
	return d.deadLetter(m), nil
}

// Counts returns the number of dead letters per tenant.
func (d DLQ) Counts(ctx context.Context) (map[string]uint64, error) {
	s, err := d.stream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(d.filter("")))
	if err != nil {
		return nil, fmt.Errorf("dlq counts: %w", err)
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		out[d.tenantOf(subj)] = n
	}
	return out, nil
}

// Count returns the number of dead letters of one tenant.
func (d DLQ) Count(ctx context.Context, tenant string) (uint64, error) {
	s, err := d.stream(ctx)
	if err != nil {
		return 0, err
	}
	subj := d.Topology.DLQSubject(tenant)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("dlq count %s: %w", tenant, err)
	}
	return info.State.Subjects[subj], nil
}

// Replayed says where a replayed dead letter went.
type Replayed struct {
	DLQSeq    uint64 `json:"dlqSeq"`
	EventID   string `json:"eventId"`
	Subject   string `json:"subject"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	TraceID   string `json:"traceId,omitempty"`
}

// InvalidError refuses a replay: the event still fails validation, so
// republishing it would only dead-letter it again.
type InvalidError struct {
	Seq uint64
	Err error // an *event.ValidationError
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("dead letter %d is still invalid (%s): %v", e.Seq, event.CodeOf(e.Err), e.Err)
}

func (e *InvalidError) Unwrap() error { return e.Err }

// Replay re-validates a dead letter with event.Decode and, when it passes,
// republishes its original bytes to the tenant's events subject, then
// deletes the DLQ copy. The Nats-Msg-Id is new (derived from the DLQ
// sequence): the event id's own may still be inside the duplicate window,
// where the stream would drop the replay, while a retried replay of the same
// dead letter is still dropped as a duplicate. A shrunk copy (its body
// truncated) is refused: it no longer holds the original's bytes.
func (d DLQ) Replay(ctx context.Context, tenant string, seq uint64, now time.Time) (Replayed, error) {
	dl, err := d.Get(ctx, tenant, seq)
	if err != nil {
		return Replayed{}, err
	}
	if dl.Header.Get(HeaderBodyTruncated) == "true" {
		// A shrunk copy keeps only the head of a body too large to copy,
		// which may decode as an event the original never was; the
		// original failed on its size and would again.
		size := dl.Header.Get(HeaderOriginalSize)
		return Replayed{}, &InvalidError{Seq: seq, Err: &event.ValidationError{
			Code: event.CodeTooLarge, Field: "body", Value: size,
			Reason: fmt.Sprintf("is %s bytes, of which the DLQ copy keeps only the first %d (truncated); the original is events sequence %d",
				size, len(dl.Data), dl.OriginalSeq),
		}}
	}
	target := dl.Tenant
	if t, ok := d.Topology.TenantFromEventsSubject(dl.OriginalSubject); ok {
		target = t
	}
	ev, err := event.Decode(event.Subject(target), dl.Data, dl.Header, now)
	if err != nil {
		return Replayed{}, &InvalidError{Seq: seq, Err: err}
	}
	msg := nats.NewMsg(d.Topology.EventsSubject(target))
	msg.Data = dl.Data
	for k, v := range dl.Header {
		if strings.HasPrefix(k, "Optout-") || strings.HasPrefix(k, "Nats-") || k == "traceparent" || k == "tracestate" {
			continue
		}
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderReplayedFrom, strconv.FormatUint(seq, 10))
	pub := natsx.Publisher(d) // the same connection and topology
	ack, err := pub.Publish(ctx, msg, fmt.Sprintf("replay-%s-%d", d.Topology.DLQStream(), seq))
	if err != nil {
		return Replayed{}, fmt.Errorf("replay dead letter %d: %w", seq, err)
	}
	res := Replayed{DLQSeq: seq, EventID: ev.GetEventId(), Subject: msg.Subject, Seq: ack.Sequence, Duplicate: ack.Duplicate, TraceID: natsx.TraceID(msg.Header)}
	if err := d.Delete(ctx, tenant, seq); err != nil && !errors.Is(err, ErrDeadLetterNotFound) {
		return res, fmt.Errorf("replayed dead letter %d as events sequence %d, but removing the DLQ copy failed: %w", seq, ack.Sequence, err)
	}
	return res, nil
}

// Delete removes one dead letter of tenant.
func (d DLQ) Delete(ctx context.Context, tenant string, seq uint64) error {
	if _, err := d.Get(ctx, tenant, seq); err != nil {
		return err
	}
	s, err := d.stream(ctx)
	if err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("tenant %s sequence %d: %w", tenant, seq, ErrDeadLetterNotFound)
		}
		return fmt.Errorf("delete dead letter %d: %w", seq, err)
	}
	return nil
}

// Purge removes every dead letter of tenant and returns how many there were.
func (d DLQ) Purge(ctx context.Context, tenant string) (uint64, error) {
	if !event.ValidTenant(tenant) {
		return 0, fmt.Errorf("dlq purge: tenant %q is not a valid tenant id", tenant)
	}
	n, err := d.Count(ctx, tenant)
	if err != nil {
		return 0, err
	}
	s, err := d.stream(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(d.Topology.DLQSubject(tenant))); err != nil {
		return 0, fmt.Errorf("purge dead letters of %s: %w", tenant, err)
	}
	return n, nil
}

func (d DLQ) deadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	dl := DeadLetter{
		Seq:             m.Sequence,
		Tenant:          d.tenantOf(m.Subject),
		Subject:         m.Subject,
		Time:            m.Time.UTC(),
		Code:            h.Get(event.HeaderErrorCode),
		Class:           h.Get(HeaderErrorClass),
		Reason:          h.Get(event.HeaderError),
		OriginalSubject: h.Get(HeaderOriginalSubject),
		ContentType:     contentTypeOf(h),
		Header:          h,
		Data:            m.Data,
	}
	dl.OriginalSeq, _ = strconv.ParseUint(h.Get(HeaderStreamSequence), 10, 64)
	dl.EventID = lenientEventID(m.Data, dl.ContentType)
	return dl
}

// contentTypeOf reads Content-Type in any casing, as event.Decode does.
func contentTypeOf(h map[string][]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.EqualFold(k, event.HeaderContentType) && len(h[k]) > 0 {
			return h[k][0]
		}
	}
	return ""
}

// lenientEventID reads event_id without validating, so an operator can find
// the event a rejected message was meant to be.
func lenientEventID(data []byte, contentType string) string {
	ev, ok := peek(data, contentType)
	if !ok {
		return ""
	}
	id := ev.GetEventId()
	if len(id) > event.MaxEventIDLen {
		id = id[:event.MaxEventIDLen]
	}
	return strings.ToValidUTF8(id, "?")
}

// Peek decodes a stored event without validating it (unknown JSON fields are
// skipped), for displays such as the age of the oldest waiting event. Never
// act on its result: only event.Decode says whether an event is valid.
func Peek(data []byte, header map[string][]string) (*optoutv1.OptOutEvent, bool) {
	return peek(data, contentTypeOf(header))
}

func peek(data []byte, contentType string) (*optoutv1.OptOutEvent, bool) {
	ev := &optoutv1.OptOutEvent{}
	media, _, _ := mime.ParseMediaType(contentType)
	var err error
	if media == event.ContentTypeJSON {
		err = (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, ev)
	} else {
		err = proto.Unmarshal(data, ev)
	}
	return ev, err == nil
}
