// Package publishcmd is "optoutctl publish": send a test opt-out, built
// from flags or read from a JSON file, exactly as an upstream publisher
// would, and print its event id and trace id.
package publishcmd

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
)

type flags struct {
	file, sc, sf, object, email, action, source, reason, occurredAt, eventID string
	asJSON                                                                   bool
}

// Command is "publish".
func Command(inv *cli.Invocation) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "publish [<tenant>] [--sc ID] [--sf ID] [--object contact|lead] [--email ADDR] [--action unsubscribe|resubscribe] [--source SOURCE] [--reason TEXT] [--occurred-at RFC3339] [--event-id ID] [--json] | --file FILE",
		Short: "send a test opt-out (from flags or a JSON file) and print its event id and trace id",
		Long: `Builds an optout.v1.OptOutEvent from the flags, or reads one in protojson from
--file (- for stdin), validates it as the pusher will, and publishes it to
optout.v1.events.<tenant> with its event id as Nats-Msg-Id and a new trace.
The trace id finds the opt-out in Jaeger; the event id finds it with
'optoutctl person show'. Protobuf is sent unless --json.

Sources: email-link, sales-user, import, api (default), salesforce.`,
		Args:              cli.RangeArgs(0, 1, "at most one argument (tenant)"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tenantArg := ""
			if len(args) == 1 {
				tenantArg = args[0]
			}
			ev, err := f.build(inv, tenantArg)
			if err != nil {
				return err
			}
			if err := event.Validate(ev, inv.Clock()); err != nil {
				return cli.Usagef("event not sent, the pusher would refuse it: %v", err)
			}
			data, contentType, err := event.Encode(ev, f.asJSON)
			if err != nil {
				return cli.Usagef("event not sent: %v", err)
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			msg := nats.NewMsg(c.Topology.EventsSubject(ev.GetTenantId()))
			msg.Data = data
			msg.Header.Set(event.HeaderContentType, contentType)
			ack, err := c.Publisher().Publish(ctx, msg, ev.GetEventId())
			if err != nil {
				return cli.Failf(err, "publish event %s: %v; check that NATS is reachable", ev.GetEventId(), err)
			}
			out := result{EventID: ev.GetEventId(), Tenant: ev.GetTenantId(), Subject: msg.Subject, Seq: ack.Sequence, Duplicate: ack.Duplicate, TraceID: natsx.TraceID(msg.Header),
				person: ev.GetPerson().GetSalesConnectId()}
			if out.person == "" {
				out.person = ev.GetPerson().GetSalesforceId()
			}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, out)
			}
			return out.write(inv.Stdout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.file, "file", "", "read the event from this protojson file (- for stdin)")
	fs.StringVar(&f.sc, "sc", "", "the person's Sales Connect id")
	fs.StringVar(&f.sf, "sf", "", "the person's Salesforce id (15 or 18 characters; 003… Contact, 00Q… Lead)")
	fs.StringVar(&f.object, "object", "", "contact or lead (default: from the Salesforce id)")
	fs.StringVar(&f.email, "email", "", "the person's email (used only to find people without a Salesforce id)")
	fs.StringVar(&f.action, "action", "unsubscribe", "unsubscribe or resubscribe")
	fs.StringVar(&f.source, "source", "api", "email-link, sales-user, import, api or salesforce")
	fs.StringVar(&f.reason, "reason", "sent with optoutctl publish", "free text for the audit trail")
	fs.StringVar(&f.occurredAt, "occurred-at", "", "when the person acted, RFC 3339 (default now)")
	fs.StringVar(&f.eventID, "event-id", "", "the event id (default optoutctl-<random>)")
	fs.BoolVar(&f.asJSON, "json", false, "send protojson instead of protobuf")
	cli.CompleteFlag(cmd, "object", "contact", "lead")
	cli.CompleteFlag(cmd, "action", "unsubscribe", "resubscribe")
	cli.CompleteFlag(cmd, "source", "email-link", "sales-user", "import", "api", "salesforce")
	return cmd
}

type result struct {
	EventID   string `json:"eventId"`
	Tenant    string `json:"tenant"`
	Subject   string `json:"subject"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	TraceID   string `json:"traceId"`
	person    string
}

func (r result) write(w io.Writer) error {
	var kv cli.KV
	kv.Add("Event id", r.EventID)
	kv.Add("Trace id", orNone(r.TraceID, "none (tracing is disabled: OTEL_SDK_DISABLED)"))
	kv.Add("Subject", r.Subject)
	if r.Duplicate {
		kv.Add("Stored", fmt.Sprintf("no: the stream already holds event %s (sequence %d) from its duplicate window; use a new --event-id", r.EventID, r.Seq))
	} else {
		kv.Add("Stored", fmt.Sprintf("yes, events sequence %d", r.Seq))
	}
	kv.Add("Follow it", "optoutctl person show "+r.Tenant+" "+r.person)
	return kv.Write(w)
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// build makes the event from --file or from the flags.
func (f *flags) build(inv *cli.Invocation, tenantArg string) (*optoutv1.OptOutEvent, error) {
	if f.file != "" {
		ev, err := f.readFile(inv)
		if err != nil {
			return nil, err
		}
		switch {
		case tenantArg != "" && ev.GetTenantId() == "":
			ev.TenantId = tenantArg
		case tenantArg != "" && ev.GetTenantId() != tenantArg:
			return nil, cli.Usagef("the file's tenantId %q differs from the tenant argument %q", ev.GetTenantId(), tenantArg)
		}
		return ev, nil
	}
	if tenantArg == "" {
		return nil, cli.Usagef("give the tenant, or an event with --file; run 'optoutctl publish --help'")
	}
	if f.sc == "" && f.sf == "" {
		return nil, cli.Usagef("give the person: --sc (Sales Connect id) and/or --sf (Salesforce id)")
	}
	ev := &optoutv1.OptOutEvent{
		EventId:  f.eventID,
		TenantId: tenantArg,
		Person:   &optoutv1.Person{SalesConnectId: f.sc, SalesforceId: f.sf, Email: f.email},
		Reason:   f.reason,
	}
	if ev.EventId == "" {
		ev.EventId = newEventID()
	}
	var ok bool
	if ev.Action, ok = parseEnum[optoutv1.Action](optoutv1.Action_value, f.action); !ok {
		return nil, cli.Usagef("--action %q: want unsubscribe or resubscribe", f.action)
	}
	if ev.Source, ok = parseEnum[optoutv1.Source](optoutv1.Source_value, f.source); !ok {
		return nil, cli.Usagef("--source %q: want email-link, sales-user, import, api or salesforce", f.source)
	}
	if f.object != "" {
		if ev.Person.ObjectType, ok = parseEnum[optoutv1.ObjectType](optoutv1.ObjectType_value, f.object); !ok {
			return nil, cli.Usagef("--object %q: want contact or lead", f.object)
		}
	}
	at := inv.Clock()
	if f.occurredAt != "" {
		t, err := time.Parse(time.RFC3339Nano, f.occurredAt)
		if err != nil {
			return nil, cli.Usagef("--occurred-at %q: want RFC 3339, e.g. 2026-11-28T12:00:00Z", f.occurredAt)
		}
		at = t
	}
	ev.OccurredAt = timestamppb.New(at)
	return ev, nil
}

func (f *flags) readFile(inv *cli.Invocation) (*optoutv1.OptOutEvent, error) {
	var data []byte
	var err error
	if f.file == "-" {
		data, err = io.ReadAll(io.LimitReader(inv.Stdin, event.MaxBodySize+1))
	} else {
		data, err = os.ReadFile(f.file)
	}
	if err != nil {
		return nil, cli.Usagef("read %s: %v", f.file, err)
	}
	ev := &optoutv1.OptOutEvent{}
	if err := protojson.Unmarshal(data, ev); err != nil {
		return nil, cli.Usagef("%s is not a protojson OptOutEvent: %v", f.file, err)
	}
	if ev.GetEventId() == "" {
		ev.EventId = newEventID()
	}
	if ev.GetOccurredAt() == nil {
		ev.OccurredAt = timestamppb.New(inv.Clock())
	}
	return ev, nil
}

// parseEnum reads "email-link" as EMAIL_LINK.
func parseEnum[T ~int32](values map[string]int32, s string) (T, bool) {
	v, ok := values[strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	return T(v), ok && v != 0
}

func newEventID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "optoutctl-" + hex.EncodeToString(b[:])
}
