package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Messaging semantic conventions (semconv v1.43.0, the version the SDK
// v1.47.0 ships). "nats" is not in the registry's well-known list, but the
// enum is open and the Java NATS instrumentation uses the same value.
const (
	// MessagingSystemNATS is the messaging.system value for NATS/JetStream.
	MessagingSystemNATS = "nats"
	// NATSDeliveryCountKey is the NATS-specific attribute for JetStream's
	// NumDelivered (the semconv pattern messaging.<system>.*).
	NATSDeliveryCountKey = attribute.Key("messaging.nats.delivery_count")
)

// OperationType is a messaging.operation.type value.
type OperationType string

// Operation types from the messaging conventions ("publish" is deprecated).
const (
	OpCreate  OperationType = "create"
	OpSend    OperationType = "send"
	OpReceive OperationType = "receive"
	OpProcess OperationType = "process"
	OpSettle  OperationType = "settle"
)

// SpanKind returns the span kind the conventions prescribe for op. Send is a
// PRODUCER because this project always injects its context into the message.
func (op OperationType) SpanKind() trace.SpanKind {
	switch op {
	case OpCreate, OpSend:
		return trace.SpanKindProducer
	case OpProcess:
		return trace.SpanKindConsumer
	default: // receive, settle
		return trace.SpanKindClient
	}
}

// MessagingSystem returns messaging.system="nats".
func MessagingSystem() attribute.KeyValue {
	return semconv.MessagingSystemKey.String(MessagingSystemNATS)
}

// DestinationName returns messaging.destination.name (the NATS subject).
func DestinationName(subject string) attribute.KeyValue {
	return semconv.MessagingDestinationName(subject)
}

// OperationTypeAttr returns messaging.operation.type.
func OperationTypeAttr(op OperationType) attribute.KeyValue {
	return semconv.MessagingOperationTypeKey.String(string(op))
}

// OperationName returns messaging.operation.name (e.g. "publish", "fetch",
// "ack", "nak", "term": the system-specific verb).
func OperationName(name string) attribute.KeyValue {
	return semconv.MessagingOperationName(name)
}

// ConsumerGroupName returns messaging.consumer.group.name (the durable
// JetStream consumer name).
func ConsumerGroupName(name string) attribute.KeyValue {
	return semconv.MessagingConsumerGroupName(name)
}

// MessageID returns messaging.message.id (the event id / Nats-Msg-Id).
func MessageID(id string) attribute.KeyValue {
	return semconv.MessagingMessageID(id)
}

// MessageBodySize returns messaging.message.body.size in bytes.
func MessageBodySize(n int) attribute.KeyValue {
	return semconv.MessagingMessageBodySize(n)
}

// BatchMessageCount returns messaging.batch.message_count.
func BatchMessageCount(n int) attribute.KeyValue {
	return semconv.MessagingBatchMessageCount(n)
}

// NATSDeliveryCount returns messaging.nats.delivery_count (JetStream
// metadata NumDelivered; 1 on first delivery).
func NATSDeliveryCount(n uint64) attribute.KeyValue {
	return NATSDeliveryCountKey.Int64(int64(n))
}

// MessagingSpanName is the conventional span name "{operation.name}
// {destination}". Pass a low-cardinality destination (a subject template
// such as "optout.v1.events.*") when the subject embeds ids.
func MessagingSpanName(operationName, destination string) string {
	if destination == "" {
		return operationName
	}
	return operationName + " " + destination
}

// MessagingAttributes returns the attributes every NATS span carries.
func MessagingAttributes(op OperationType, operationName, subject string) []attribute.KeyValue {
	return []attribute.KeyValue{
		MessagingSystem(),
		OperationTypeAttr(op),
		OperationName(operationName),
		DestinationName(subject),
	}
}

// StartSend starts a PRODUCER "send" span for publishing to subject and
// injects its context into h, so the consumer's process span becomes its
// child. The caller ends the span after the publish ack.
func StartSend(ctx context.Context, tracer trace.Tracer, subject string, h map[string][]string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := tracer.Start(ctx, MessagingSpanName("publish", subject),
		trace.WithSpanKind(OpSend.SpanKind()),
		trace.WithAttributes(MessagingAttributes(OpSend, "publish", subject)...),
		trace.WithAttributes(attrs...),
	)
	Inject(ctx, h)
	return ctx, span
}

// StartProcess starts a CONSUMER "process" span for one message, parented on
// the context extracted from its headers h. The conventions default to
// links, but for single-message processing they allow the creation context
// as parent; we choose the parent so one opt-out is one trace from publisher
// to Salesforce (docs/architecture.md#invariants). Batch receivers should
// use links instead.
func StartProcess(ctx context.Context, tracer trace.Tracer, subject string, h map[string][]string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = Extract(ctx, h)
	return tracer.Start(ctx, MessagingSpanName("process", subject),
		trace.WithSpanKind(OpProcess.SpanKind()),
		trace.WithAttributes(MessagingAttributes(OpProcess, "process", subject)...),
		trace.WithAttributes(attrs...),
	)
}
