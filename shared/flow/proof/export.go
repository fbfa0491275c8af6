package proof

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/csvx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Export formats.
const (
	CSV  = "csv"
	JSON = "json"
)

// Row is one exported change of a person (or, in a current export, one
// person's entry now).
type Row struct {
	Key      string       `json:"key"`
	Revision uint64       `json:"revision"`
	At       time.Time    `json:"at,omitzero"`
	EventID  string       `json:"eventId,omitempty"`
	Entry    optout.Entry `json:"entry"`
}

// RowHeader is the CSV header of Row.
var RowHeader = []string{"tenant", "key", "revision", "changed_at", "event_id", "sales_connect_id", "salesforce_id", "object_type", "email_hash",
	"opted_out", "decided_at", "decided_by", "source", "state", "reason", "field", "confirmed", "confirmed_at", "set_by_us", "trace_id",
	"event_action", "event_source", "event_occurred_at", "event_reason"}

// CSV is the row's values in RowHeader's order.
func (r Row) CSV() []string {
	e := r.Entry
	at := r.At
	if at.IsZero() {
		at = e.ChangedAt
	}
	confirmed := ""
	if e.Confirmed != nil {
		confirmed = strconv.FormatBool(*e.Confirmed)
	}
	row := []string{e.Tenant, r.Key, strconv.FormatUint(r.Revision, 10), rfc(at), r.EventID, e.SalesConnectID, e.SalesforceID, e.ObjectType, e.EmailHash,
		strconv.FormatBool(e.OptedOut), rfc(e.DecidedAt), e.DecidedBy, e.Source, string(e.State), e.Reason, e.Field, confirmed, rfc(e.ConfirmedAt),
		strconv.FormatBool(e.SetByUs), e.TraceID}
	if ev := e.LastEvent; ev != nil {
		row = append(row, ev.Action, ev.Source, rfc(ev.OccurredAt), ev.Reason)
	} else {
		row = append(row, "", "", "", "")
	}
	return row
}

// PersonRows are a looked-up person's changes as export rows, oldest first
// per entry: the same rows the tenant's trail export holds for them.
func PersonRows(people []Person) []Row {
	var out []Row
	for _, p := range people {
		events := AppliedEvents(p.History)
		for i, r := range p.History {
			out = append(out, Row{Key: r.Key, Revision: r.Revision, At: r.At, EventID: events[i], Entry: r.Entry})
		}
	}
	return out
}

// Trail streams every change to every person of tenant, oldest first.
// Changes made just before the export are in it too: it waits (bounded)
// for the asynchronously copied trail, as Find does.
func Trail(ctx context.Context, src Source, tenant string, fn func(Row) error) error {
	if err := waitAudited(ctx, src.JS, src.Topology); err != nil {
		return err
	}
	last := map[string]string{}
	return ledger.ReadAudit(ctx, src.JS, src.Topology, tenant, func(r ledger.AuditRecord) error {
		ev := EventOf(r.Entry)
		row := Row{Key: r.Key, Revision: r.Revision, At: r.At, Entry: r.Entry}
		if ev != last[r.Key] {
			row.EventID = ev
		}
		last[r.Key] = ev
		return fn(row)
	})
}

// Current streams every person's entry now, in storage order.
func Current(ctx context.Context, src Source, tenant string, fn func(Row) error) error {
	return src.Ledger.Scan(ctx, tenant, func(it ledger.ScanItem) error {
		return fn(Row{Key: it.Key, Revision: it.Revision, Entry: it.Entry, EventID: EventOf(it.Entry)})
	}, nil)
}

// Sink streams rows as CSV (with a header) or as one JSON array (one row a
// line), so an export of any size needs no memory for it.
type Sink[R interface{ CSV() []string }] struct {
	w    io.Writer
	csv  *csvx.Writer
	rows int
}

// NewSink starts an export in format (CSV or JSON); header is R's CSV header.
func NewSink[R interface{ CSV() []string }](w io.Writer, format string, header []string) (*Sink[R], error) {
	s := &Sink[R]{w: w}
	switch format {
	case CSV:
		c, err := csvx.New(w, header)
		if err != nil {
			return nil, err
		}
		s.csv = c
		return s, nil
	case JSON:
		_, err := io.WriteString(w, "[")
		return s, err
	}
	return nil, fmt.Errorf("export format %q: want csv or json", format)
}

// Write writes one row.
func (s *Sink[R]) Write(r R) error {
	s.rows++
	if s.csv != nil {
		return s.csv.Write(r.CSV())
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sep := ",\n"
	if s.rows == 1 {
		sep = "\n"
	}
	_, err = fmt.Fprintf(s.w, "%s  %s", sep, b)
	return err
}

// Flush writes out what Write buffered (CSV rows), so each row can be
// shown whole, as beside a progress bar.
func (s *Sink[R]) Flush() error {
	if s.csv != nil {
		return s.csv.Flush()
	}
	return nil
}

// Close ends the export.
func (s *Sink[R]) Close() error {
	if s.csv != nil {
		return s.csv.Flush()
	}
	end := "\n]\n"
	if s.rows == 0 {
		end = "]\n"
	}
	_, err := io.WriteString(s.w, end)
	return err
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
