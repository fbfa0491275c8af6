// Package dlqcmd is "optoutctl dlq": list, show, replay and purge dead
// letters, the events that could never be applied as sent, each with the
// reason the pusher gave.
package dlqcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
)

// Command is the "dlq" group.
func Command(inv *cli.Invocation) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "dead letters by tenant: list with reasons, show, replay after a fix, purge",
	}
	cmd.AddCommand(listCmd(inv), showCmd(inv), replayCmd(inv), purgeCmd(inv))
	return cmd
}

func listCmd(inv *cli.Invocation) *cobra.Command {
	var code string
	var limit int
	cmd := &cobra.Command{
		Use:               "list [<tenant>] [--code CODE] [--limit N]",
		Short:             "dead letters of a tenant (or of every tenant), oldest first, with the reason",
		Args:              cli.RangeArgs(0, 1, "at most one argument (tenant)"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := ""
			if len(args) == 1 {
				if t = args[0]; !event.ValidTenant(t) {
					return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
				}
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			items, err := collect(ctx, c.DLQ(), t, code, limit)
			if err != nil {
				return conn.Wrap(err, "list dead letters")
			}
			tbl := &cli.Table{Header: []string{"SEQ", "TENANT", "TIME", "CODE", "CLASS", "EVENT", "REASON"}, Empty: "No dead letters."}
			for _, d := range items {
				tbl.Rows = append(tbl.Rows, []string{strconv.FormatUint(d.Seq, 10), d.Tenant, tenantstatus.FormatTime(d.Time), d.Code, d.Class, d.EventID, shorten(d.Reason, 100)})
			}
			return inv.Print(tbl, items)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&code, "code", "", "only dead letters with this error code (e.g. undecodable, NOT_FOUND)")
	fs.IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	return cmd
}

// collect lists dead letters, filtered by code, up to limit (0: all).
func collect(ctx context.Context, d deadletter.DLQ, t, code string, limit int) ([]deadletter.DeadLetter, error) {
	items := []deadletter.DeadLetter{}
	stop := errors.New("limit reached")
	err := d.List(ctx, t, func(dl deadletter.DeadLetter) error {
		if code != "" && dl.Code != code {
			return nil
		}
		items = append(items, dl)
		if limit > 0 && len(items) >= limit {
			return stop
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return items, nil
}

func showCmd(inv *cli.Invocation) *cobra.Command {
	return &cobra.Command{
		Use:               "show <tenant> <seq>",
		Short:             "one dead letter: reason, headers and the event as sent",
		Args:              cli.ExactArgs("tenant", "seq"),
		ValidArgsFunction: completeArgs(inv, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, seqs, err := tenantAndSeqs(args)
			if err != nil {
				return err
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			d, err := c.DLQ().Get(ctx, t, seqs[0])
			if err != nil {
				return notFound(err, t, seqs[0])
			}
			body, bodyKind := renderBody(d)
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, struct {
					deadletter.DeadLetter
					Headers  map[string][]string `json:"headers"`
					Body     json.RawMessage     `json:"body,omitempty"`
					BodyText string              `json:"bodyText,omitempty"`
				}{d, d.Header, jsonBody(body, bodyKind), textBody(body, bodyKind)})
			}
			var kv cli.KV
			kv.Add("Sequence", strconv.FormatUint(d.Seq, 10))
			kv.Add("Tenant", d.Tenant)
			kv.Add("Dead-lettered", tenantstatus.FormatTime(d.Time))
			kv.Add("Code", d.Code)
			kv.Add("Class", d.Class)
			kv.Add("Reason", d.Reason)
			kv.Add("Event id", d.EventID)
			orig := d.OriginalSubject
			if d.OriginalSeq > 0 {
				orig += fmt.Sprintf(" (events sequence %d)", d.OriginalSeq)
			}
			kv.Add("Sent to", orig)
			if err := kv.Write(inv.Stdout); err != nil {
				return err
			}
			fmt.Fprintln(inv.Stdout, "\nHeaders:")
			names := make([]string, 0, len(d.Header))
			for k := range d.Header {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				for _, v := range d.Header[k] {
					fmt.Fprintf(inv.Stdout, "  %s: %s\n", k, v)
				}
			}
			fmt.Fprintf(inv.Stdout, "\nBody (%s):\n%s\n", bodyKind, body)
			fmt.Fprintf(inv.Stdout, "\nAfter fixing the cause: optoutctl dlq replay %s %d\n", d.Tenant, d.Seq)
			return nil
		},
	}
}

// renderBody shows the event as sent: JSON as is (indented), protobuf
// decoded to JSON, anything else quoted.
func renderBody(d deadletter.DeadLetter) (string, string) {
	var buf bytes.Buffer
	if json.Valid(d.Data) && json.Indent(&buf, d.Data, "", "  ") == nil {
		return buf.String(), "JSON"
	}
	if ev, ok := deadletter.Peek(d.Data, d.Header); ok && ev.GetEventId() != "" {
		if b, err := (protojson.MarshalOptions{Multiline: true, Indent: "  "}).Marshal(ev); err == nil {
			if json.Indent(&buf, b, "", "  ") == nil {
				return buf.String(), "protobuf, shown as JSON"
			}
		}
	}
	if utf8.Valid(d.Data) {
		return strconv.Quote(string(d.Data)), fmt.Sprintf("%d bytes, not an event", len(d.Data))
	}
	return fmt.Sprintf("%x", d.Data), fmt.Sprintf("%d bytes, not an event, in hex", len(d.Data))
}

func jsonBody(body, kind string) json.RawMessage {
	if kind == "JSON" || strings.HasPrefix(kind, "protobuf") {
		return json.RawMessage(body)
	}
	return nil
}

func textBody(body, kind string) string {
	if jsonBody(body, kind) != nil {
		return ""
	}
	return body
}

func replayCmd(inv *cli.Invocation) *cobra.Command {
	var all bool
	var code string
	cmd := &cobra.Command{
		Use:   "replay <tenant> (<seq>... | --all [--code CODE])",
		Short: "re-validate dead letters and republish the valid ones to the events subject",
		Long: `Each dead letter is decoded and validated exactly as the pusher does. A valid
one is republished (original bytes, new Nats-Msg-Id so the stream's duplicate
window does not drop it) and then removed from the DLQ; the pusher applies it
like any event, and its ledger makes a second delivery harmless. One still
invalid is kept and reported: fix it at the source, or send a corrected event
with 'optoutctl publish --file'. Exit code 4 when any was still invalid.`,
		Args:              cli.RangeArgs(1, -1, "a tenant and sequences, or a tenant and --all"),
		ValidArgsFunction: completeArgs(inv, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, seqs, err := tenantAndSeqs(args)
			if err != nil {
				return err
			}
			if all == (len(seqs) > 0) {
				return cli.Usagef("give either sequences or --all")
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			d := c.DLQ()
			if all {
				items, err := collect(ctx, d, t, code, 0)
				if err != nil {
					return conn.Wrap(err, "list dead letters")
				}
				for _, it := range items {
					seqs = append(seqs, it.Seq)
				}
			}
			type outcome struct {
				DLQSeq  uint64 `json:"dlqSeq"`
				Result  string `json:"result"` // replayed | invalid | not-found | failed
				EventID string `json:"eventId,omitempty"`
				Seq     uint64 `json:"seq,omitempty"`
				TraceID string `json:"traceId,omitempty"`
				Detail  string `json:"detail,omitempty"`
			}
			var outs []outcome
			n := map[string]int{}
			prog := inv.Progress(int64(len(seqs)), "replaying dead letters of "+t, "letters")
			for _, seq := range seqs {
				r, err := d.Replay(ctx, t, seq, inv.Clock())
				o := outcome{DLQSeq: seq, EventID: r.EventID, Seq: r.Seq, TraceID: r.TraceID}
				var bad *deadletter.InvalidError
				switch {
				case err == nil:
					o.Result, o.Detail = "replayed", fmt.Sprintf("events sequence %d", r.Seq)
					if r.Duplicate {
						o.Detail += " (already republished by an earlier replay)"
					}
				case errors.As(err, &bad):
					o.Result, o.Detail = "invalid", bad.Err.Error()
				case errors.Is(err, deadletter.ErrDeadLetterNotFound):
					o.Result, o.Detail = "not-found", "no such dead letter in tenant "+t
				default:
					o.Result, o.Detail = "failed", err.Error()
				}
				n[o.Result]++
				outs = append(outs, o)
				prog.Add(1)
			}
			prog.Done()
			tbl := &cli.Table{Header: []string{"DLQ SEQ", "RESULT", "EVENT", "DETAIL"}, Empty: "No dead letters to replay."}
			for _, o := range outs {
				tbl.Rows = append(tbl.Rows, []string{strconv.FormatUint(o.DLQSeq, 10), o.Result, o.EventID, o.Detail})
			}
			if outs == nil {
				outs = []outcome{}
			}
			if err := inv.Print(tbl, outs); err != nil {
				return err
			}
			// The most serious outcome decides the exit code.
			switch {
			case n["failed"] > 0:
				return cli.Failf(nil, "%s failed (see above); run the command again: a replay is safe to repeat", count("replay", "replays", n["failed"]))
			case n["invalid"] > 0:
				return cli.Prereqf("%s still invalid and kept; fix the cause at the source, or send a corrected event with 'optoutctl publish --file'",
					count("dead letter is", "dead letters are", n["invalid"]))
			case n["not-found"] > 0:
				return cli.NotFoundf("%s not a dead letter of tenant %s; list them with 'optoutctl dlq list %s'", count("sequence is", "sequences are", n["not-found"]), t, t)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&all, "all", false, "replay every dead letter of the tenant")
	fs.StringVar(&code, "code", "", "with --all: only dead letters with this error code")
	return cmd
}

func purgeCmd(inv *cli.Invocation) *cobra.Command {
	var all, yes bool
	cmd := &cobra.Command{
		Use:   "purge <tenant> (<seq>... | --all --yes)",
		Short: "delete dead letters for good",
		Long: `Deletes the given dead letters, or with --all every dead letter of the tenant.
A dead letter may be the only copy of a person's opt-out, so --all needs
--yes; prefer replaying what can be fixed.`,
		Args:              cli.RangeArgs(1, -1, "a tenant and sequences, or a tenant and --all"),
		ValidArgsFunction: completeArgs(inv, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, seqs, err := tenantAndSeqs(args)
			if err != nil {
				return err
			}
			if all == (len(seqs) > 0) {
				return cli.Usagef("give either sequences or --all")
			}
			if all && !yes {
				return cli.Usagef("purging every dead letter of %s deletes what may be the only copy of those opt-outs; add --yes to confirm", t)
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			d := c.DLQ()
			var deleted uint64
			if all {
				if deleted, err = d.Purge(ctx, t); err != nil {
					return conn.Wrap(err, "purge dead letters of "+t)
				}
			} else {
				for _, seq := range seqs {
					if err := d.Delete(ctx, t, seq); err != nil {
						if errors.Is(err, deadletter.ErrDeadLetterNotFound) {
							return cli.NotFoundf("tenant %s has no dead letter %d (deleted %d before it); list them with 'optoutctl dlq list %s'", t, seq, deleted, t)
						}
						return conn.Wrap(err, "delete dead letter")
					}
					deleted++
				}
			}
			out := struct {
				Tenant  string `json:"tenant"`
				Deleted uint64 `json:"deleted"`
			}{t, deleted}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, out)
			}
			_, err = fmt.Fprintf(inv.Stdout, "deleted %d dead %s of tenant %s\n", deleted, plural(deleted, "letter", "letters"), t)
			return err
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&all, "all", false, "delete every dead letter of the tenant")
	fs.BoolVar(&yes, "yes", false, "confirm --all")
	return cmd
}

// completeArgs completes the tenant, then up to max (< 0: any number) of
// its dead letters' sequences not given yet, each with its code and reason.
func completeArgs(inv *cli.Invocation, max int) cobra.CompletionFunc {
	tenants := conn.CompleteTenant(inv)
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return tenants(cmd, args, prefix)
		}
		if (max >= 0 && len(args) > max) || !event.ValidTenant(args[0]) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		given := map[string]bool{}
		for _, a := range args[1:] {
			given[a] = true
		}
		return conn.Complete(cmd, inv, func(ctx context.Context, c *conn.Conn) ([]cobra.Completion, error) {
			items, err := collect(ctx, c.DLQ(), args[0], "", 0)
			var out []cobra.Completion
			for _, d := range items {
				if seq := strconv.FormatUint(d.Seq, 10); !given[seq] && strings.HasPrefix(seq, prefix) {
					out = append(out, cobra.CompletionWithDesc(seq, d.Code+": "+shorten(strings.Join(strings.Fields(d.Reason), " "), 60)))
				}
			}
			return out, err
		})
	}
}

func tenantAndSeqs(args []string) (string, []uint64, error) {
	t := args[0]
	if !event.ValidTenant(t) {
		return "", nil, cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
	}
	var seqs []uint64
	for _, a := range args[1:] {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return "", nil, cli.Usagef("sequence %q: want a positive number from 'optoutctl dlq list %s'", a, t)
		}
		seqs = append(seqs, n)
	}
	return t, seqs, nil
}

func notFound(err error, t string, seq uint64) error {
	if errors.Is(err, deadletter.ErrDeadLetterNotFound) {
		return cli.NotFoundf("tenant %s has no dead letter %d; list them with 'optoutctl dlq list %s'", t, seq, t)
	}
	return conn.Wrap(err, "dead letter")
}

func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// count renders "1 thing is" or "3 things are".
func count(one, many string, n int) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
