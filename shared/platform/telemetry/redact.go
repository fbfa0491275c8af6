package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// redactingProcessor applies logx.Redact to every ended span before handing
// it to the wrapped processor (normally the batcher feeding an exporter).
//
// OnEnd only gets a ReadOnlySpan, and the SDK's ReadOnlySpan cannot be
// implemented outside the SDK, so a redacted copy is built with
// tracetest.SpanStub.Snapshot, which is the SDK's own supported way to make
// one. Spans that need no change are passed through untouched, so the cost is
// a scan of their strings.
type redactingProcessor struct {
	next sdktrace.SpanProcessor
}

// NewRedactingSpanProcessor wraps next so that span names, string (and
// string slice) attributes, event names and attributes, link attributes and
// the status description are redacted before next sees the ended span.
// Setup installs it in front of every exporter.
func NewRedactingSpanProcessor(next sdktrace.SpanProcessor) sdktrace.SpanProcessor {
	return &redactingProcessor{next: next}
}

func (p *redactingProcessor) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {
	p.next.OnStart(parent, s)
}

func (p *redactingProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	p.next.OnEnd(RedactSpan(s))
}

func (p *redactingProcessor) Shutdown(ctx context.Context) error { return p.next.Shutdown(ctx) }

func (p *redactingProcessor) ForceFlush(ctx context.Context) error { return p.next.ForceFlush(ctx) }

// RedactSpan returns s unchanged when it holds nothing to redact, otherwise a
// redacted copy. The original is never mutated: the same snapshot is shared
// by every processor registered on the provider.
func RedactSpan(s sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	name, nameChanged := redactString(s.Name())
	attrs, attrsChanged := redactAttrs(s.Attributes())
	desc, descChanged := redactString(s.Status().Description)

	events := s.Events()
	eventsChanged := false
	var newEvents []sdktrace.Event
	for i, ev := range events {
		evName, c1 := redactString(ev.Name)
		evAttrs, c2 := redactAttrs(ev.Attributes)
		if !c1 && !c2 {
			continue
		}
		if !eventsChanged {
			newEvents = append([]sdktrace.Event(nil), events...)
			eventsChanged = true
		}
		newEvents[i].Name = evName
		newEvents[i].Attributes = evAttrs
	}

	links := s.Links()
	linksChanged := false
	var newLinks []sdktrace.Link
	for i, l := range links {
		la, c := redactAttrs(l.Attributes)
		if !c {
			continue
		}
		if !linksChanged {
			newLinks = append([]sdktrace.Link(nil), links...)
			linksChanged = true
		}
		newLinks[i].Attributes = la
	}

	if !nameChanged && !attrsChanged && !descChanged && !eventsChanged && !linksChanged {
		return s
	}
	stub := tracetest.SpanStubFromReadOnlySpan(s)
	stub.Name = name
	stub.Attributes = attrs
	stub.Status.Description = desc
	if eventsChanged {
		stub.Events = newEvents
	}
	if linksChanged {
		stub.Links = newLinks
	}
	return stub.Snapshot()
}

func redactString(s string) (string, bool) {
	r := logx.Redact(s)
	return r, r != s
}

// redactAttrs returns a redacted copy of attrs, or attrs itself and false
// when nothing changed.
func redactAttrs(attrs []attribute.KeyValue) ([]attribute.KeyValue, bool) {
	var out []attribute.KeyValue
	for i, kv := range attrs {
		nkv, changed := redactAttr(kv)
		if !changed {
			continue
		}
		if out == nil {
			out = append([]attribute.KeyValue(nil), attrs...)
		}
		out[i] = nkv
	}
	if out == nil {
		return attrs, false
	}
	return out, true
}

func redactAttr(kv attribute.KeyValue) (attribute.KeyValue, bool) {
	if v, changed := redactValue(kv.Value); changed {
		return attribute.KeyValue{Key: kv.Key, Value: v}, true
	}
	return kv, false
}

// redactValue covers every value type that can hold text, including the
// nested SLICE and MAP values and raw bytes (payload dumps).
func redactValue(v attribute.Value) (attribute.Value, bool) {
	switch v.Type() {
	case attribute.STRING:
		if r, changed := redactString(v.AsString()); changed {
			return attribute.StringValue(r), true
		}
	case attribute.STRINGSLICE:
		vals := v.AsStringSlice() // a fresh copy, safe to modify
		changed := false
		for i, s := range vals {
			if r, c := redactString(s); c {
				vals[i] = r
				changed = true
			}
		}
		if changed {
			return attribute.StringSliceValue(vals), true
		}
	case attribute.BYTESLICE:
		if r, changed := redactString(string(v.AsByteSlice())); changed {
			return attribute.ByteSliceValue([]byte(r)), true
		}
	case attribute.SLICE:
		vals := v.AsSlice()
		changed := false
		for i, e := range vals {
			if r, c := redactValue(e); c {
				vals[i] = r
				changed = true
			}
		}
		if changed {
			return attribute.SliceValue(vals...), true
		}
	case attribute.MAP:
		if kvs, changed := redactAttrs(v.AsMap()); changed {
			return attribute.MapValue(kvs...), true
		}
	}
	return v, false
}
