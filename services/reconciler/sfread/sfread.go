// Package sfread reads the Salesforce side of a reconcile: every Contact and
// Lead whose opt-out field is true (SOQL with queryMore for small sets, Bulk
// API 2.0 above a threshold), and, by id, the records the ledger believes
// opted out that were not in that set.
package sfread

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

// Mode chooses the read path.
type Mode string

// Modes.
const (
	// Auto reads an object with SOQL when it has at most BulkThreshold
	// opted-out records, else with a Bulk API 2.0 query job.
	Auto Mode = "auto"
	SOQL Mode = "soql"
	Bulk Mode = "bulk"
)

// Paths as reported.
const (
	PathSOQL = "soql"
	PathBulk = "bulk"
)

// Objects are the sObjects compared, in read order.
var Objects = []string{sfid.Contact, sfid.Lead}

// Options tune the reads.
type Options struct {
	Mode Mode
	// BulkThreshold: in Auto mode, an object with more opted-out records
	// than this is read with Bulk API 2.0. Finding out costs one SOQL query
	// with LIMIT BulkThreshold+1 (its pages are wasted when it is exceeded).
	BulkThreshold int
	// PageSize is the SOQL batch size asked for (200..2000).
	PageSize int
	// BulkMaxRecords is the rows per Bulk results page.
	BulkMaxRecords int
	// BulkPollInitial and BulkPollMax pace the job polls.
	BulkPollInitial, BulkPollMax time.Duration
	Tracer                       trace.Tracer
}

// DefaultOptions: Heroku Connect's documented switch to Bulk is 10,000 rows.
func DefaultOptions() Options {
	return Options{Mode: Auto, BulkThreshold: 10000, PageSize: 2000, BulkMaxRecords: 100000,
		BulkPollInitial: 500 * time.Millisecond, BulkPollMax: 30 * time.Second}
}

// Page describes one page read.
type Page struct {
	Object string
	Path   string
	Number int
	Rows   int
}

// Result is the opted-out set of the org.
type Result struct {
	Set   *idset.Set
	Paths map[string]string // object → path
	Pages int
}

// ReadOptedOut reads every Contact and Lead with field = true: Contacts and
// Leads concurrently, each streamed into one compact set (a shared builder,
// so no per-object copy is ever merged). onPage (called from the reading
// goroutines, serialised) sees each page as it completes.
func ReadOptedOut(ctx context.Context, c sfcreds.Client, field string, o Options, onPage func(Page)) (Result, error) {
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	ctx = budget.WithKind(ctx, budget.Read)
	var b idset.Builder
	paths, pages, err := readObjects(ctx, c, o, func(obj string) string {
		return "SELECT Id, SystemModstamp FROM " + obj + " WHERE " + field + " = true"
	}, "", func(id idset.ID, _ bool, at int64) { b.Add(id, at) }, onPage)
	res := Result{Paths: paths, Pages: pages}
	if err != nil {
		return res, err
	}
	res.Set = b.Build()
	return res, nil
}

// readObjects reads every object of Objects concurrently, with the query
// soqlOf gives each (readObject); add and onPage are called serialised.
func readObjects(ctx context.Context, c sfcreds.Client, o Options, soqlOf func(obj string) string, valueField string,
	add func(idset.ID, bool, int64), onPage func(Page)) (paths map[string]string, pages int, err error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs = make([]error, len(Objects))
	)
	paths = map[string]string{}
	page := func(p Page) {
		mu.Lock()
		defer mu.Unlock()
		pages++
		if onPage != nil {
			onPage(p)
		}
	}
	locked := func(id idset.ID, value bool, at int64) {
		mu.Lock()
		defer mu.Unlock()
		add(id, value, at)
	}
	for i, obj := range Objects {
		wg.Go(func() {
			path, err := readObject(ctx, c, obj, soqlOf(obj), valueField, o, locked, page)
			mu.Lock()
			defer mu.Unlock()
			paths[obj] = path
			errs[i] = err
		})
	}
	wg.Wait()
	return paths, pages, errors.Join(errs...)
}

// readObject reads the rows of soql (Id, SystemModstamp and, when
// valueField is set, that boolean field; else every row is true).
func readObject(ctx context.Context, c sfcreds.Client, obj, soql, valueField string, o Options, add func(idset.ID, bool, int64), onPage func(Page)) (string, error) {
	switch o.Mode {
	case SOQL:
		return PathSOQL, readSOQL(ctx, c, obj, soql, valueField, o, add, onPage)
	case Bulk:
		return PathBulk, readBulk(ctx, c, obj, soql, valueField, o, add, onPage)
	}
	// Auto: a bounded SOQL read is the whole answer when the set is small.
	type row struct {
		id    idset.ID
		value bool
		at    int64
	}
	var probe []row
	err := readSOQL(ctx, c, obj, soql+" LIMIT "+strconv.Itoa(o.BulkThreshold+1), valueField, o,
		func(id idset.ID, v bool, at int64) { probe = append(probe, row{id, v, at}) }, onPage)
	if err != nil {
		return PathSOQL, err
	}
	if len(probe) <= o.BulkThreshold {
		for _, r := range probe {
			add(r.id, r.value, r.at)
		}
		return PathSOQL, nil
	}
	probe = nil
	return PathBulk, readBulk(ctx, c, obj, soql, valueField, o, add, onPage)
}

// pageSpan covers the processing of one page; it starts where the
// previous page ended, so it also covers the request that fetched it.
type pageSpan struct {
	ctx    context.Context
	tracer trace.Tracer
	obj    string
	path   string
	span   trace.Span
	from   time.Time
	number int
	rows   int
	onPage func(Page)
}

func (p *pageSpan) start() {
	p.number++
	p.rows = 0
	_, p.span = p.tracer.Start(p.ctx, "reconcile.read_page", trace.WithTimestamp(p.from),
		trace.WithAttributes(attribute.String("salesforce.object", p.obj), attribute.String("reconcile.read_path", p.path),
			attribute.Int("reconcile.page", p.number)))
}

func (p *pageSpan) end(err error) {
	if p.span == nil {
		return
	}
	p.span.SetAttributes(attribute.Int("reconcile.rows", p.rows))
	if err != nil {
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, "page failed")
	}
	p.span.End()
	p.span = nil
	p.from = time.Now()
	if err == nil && p.onPage != nil {
		p.onPage(Page{Object: p.obj, Path: p.path, Number: p.number, Rows: p.rows})
	}
}

func readSOQL(ctx context.Context, c sfcreds.Client, obj, soql, valueField string, o Options, add func(idset.ID, bool, int64), onPage func(Page)) error {
	// The query iterator hides page boundaries; a per-read call counter
	// shows them (each page is one request).
	var calls budget.Counter
	ctx = budget.WithCounter(ctx, &calls)
	ps := &pageSpan{ctx: ctx, tracer: o.Tracer, obj: obj, path: PathSOQL, from: time.Now(), onPage: onPage}
	seen := int64(0)
	for rec, err := range c.Query(ctx, soql, salesforce.WithBatchSize(o.PageSize)) {
		if err != nil {
			ps.end(err)
			return fmt.Errorf("read %s opt-outs (SOQL page %d): %w", obj, ps.number+1, err)
		}
		if n := calls.N(); n != seen {
			ps.end(nil)
			ps.start()
			seen = n
		}
		value := valueField == "" || rec.Bool(valueField)
		if err := parse(add, rec.ID, value, rec.String("SystemModstamp")); err != nil {
			ps.end(err)
			return fmt.Errorf("read %s opt-outs: %w", obj, err)
		}
		ps.rows++
	}
	ps.end(nil)
	return nil
}

func readBulk(ctx context.Context, c sfcreds.Client, obj, soql, valueField string, o Options, add func(idset.ID, bool, int64), onPage func(Page)) error {
	ps := &pageSpan{ctx: ctx, tracer: o.Tracer, obj: obj, path: PathBulk, from: time.Now(), onPage: onPage}
	idCol, modCol, valCol := -1, -1, -1
	opts := salesforce.BulkQueryOptions{
		MaxRecords:  o.BulkMaxRecords,
		PollInitial: o.BulkPollInitial,
		PollMax:     o.BulkPollMax,
		OnPage:      func(salesforce.BulkPage) { ps.end(nil) },
	}
	_, err := c.BulkQuery(ctx, soql, opts, func(header, row []string) error {
		if ps.span == nil {
			ps.start()
		}
		if idCol < 0 {
			for i, h := range header {
				switch {
				case strings.EqualFold(h, "Id"):
					idCol = i
				case strings.EqualFold(h, "SystemModstamp"):
					modCol = i
				case valueField != "" && strings.EqualFold(h, valueField):
					valCol = i
				}
			}
			if idCol < 0 || modCol < 0 || (valueField != "" && valCol < 0) {
				return fmt.Errorf("bulk results of %s lack Id, SystemModstamp or %s (header %v)", obj, valueField, header)
			}
		}
		ps.rows++
		value := valCol < 0 || strings.EqualFold(row[valCol], "true")
		return parse(add, row[idCol], value, row[modCol])
	})
	if err != nil {
		ps.end(err)
		return fmt.Errorf("read %s opt-outs (Bulk API 2.0): %w", obj, err)
	}
	return nil
}

func parse(add func(idset.ID, bool, int64), id string, value bool, modstamp string) error {
	k, err := idset.Parse(id)
	if err != nil {
		return fmt.Errorf("malformed id from Salesforce: %w", err)
	}
	at, err := ParseTime(modstamp)
	if err != nil {
		return err
	}
	add(k, value, at.UnixMilli())
	return nil
}

// Changed is what changed in Salesforce since an instant: the records now
// opted out (a compact set, as a full read's) and those now not, with
// their SystemModstamp (Unix ms).
type Changed struct {
	Set     *idset.Set
	Cleared map[idset.ID]int64
	Paths   map[string]string // object → path
	Pages   int
	Rows    int
}

// ReadChanged reads every Contact and Lead whose SystemModstamp is after
// since (on Salesforce's clock), with the field's value: an incremental
// run's Salesforce side. Deleted records are not returned (/query): an
// opt-out is never reverted by absence, and the full scan reports them.
func ReadChanged(ctx context.Context, c sfcreds.Client, field string, since time.Time, o Options, onPage func(Page)) (Changed, error) {
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	ctx = budget.WithKind(ctx, budget.Read)
	var b idset.Builder
	res := Changed{Cleared: map[idset.ID]int64{}}
	// dateTime literals are unquoted, in UTC (§5).
	lit := since.UTC().Format("2006-01-02T15:04:05Z")
	paths, pages, err := readObjects(ctx, c, o, func(obj string) string {
		return "SELECT Id, " + field + ", SystemModstamp FROM " + obj + " WHERE SystemModstamp > " + lit
	}, field, func(id idset.ID, value bool, at int64) {
		res.Rows++
		if value {
			b.Add(id, at)
		} else {
			res.Cleared[id] = at
		}
	}, onPage)
	res.Paths, res.Pages = paths, pages
	if err != nil {
		return res, err
	}
	res.Set = b.Build()
	return res, nil
}

// ParseTime reads a Salesforce dateTime: "2025-03-01T10:00:00.000+0000"
// in JSON, or RFC 3339 forms such as "2025-03-01T10:00:00.000Z" in Bulk CSV.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unreadable SystemModstamp %q", s)
}

// Found is one record looked up by id.
type Found struct {
	ID       idset.ID
	Value    bool  // the opt-out field
	Modstamp int64 // SystemModstamp, Unix ms
}

// Lookup reads field and SystemModstamp of ids (SOQL Id IN (...), as many
// ids a query as the URI cap allows). A record that is deleted, merged or
// not visible is simply not reported: the caller sees it as missing.
func Lookup(ctx context.Context, c sfcreds.Client, field string, ids []idset.ID, fn func(Found)) error {
	ctx = budget.WithKind(ctx, budget.Lookup)
	byType := map[string][]string{}
	for _, id := range ids {
		if t := id.Type(); t != "" {
			byType[t] = append(byType[t], id.String())
		}
	}
	for _, obj := range Objects {
		list := byType[obj]
		if len(list) == 0 {
			continue
		}
		for rec, err := range c.QueryIDs(ctx, obj, []string{"Id", field, "SystemModstamp"}, list) {
			if err != nil {
				return fmt.Errorf("look up %d %s records: %w", len(list), obj, err)
			}
			k, err := idset.Parse(rec.ID)
			if err != nil {
				return fmt.Errorf("look up %s: malformed id from Salesforce: %w", obj, err)
			}
			at, err := ParseTime(rec.String("SystemModstamp"))
			if err != nil {
				return err
			}
			fn(Found{ID: k, Value: rec.Bool(field), Modstamp: at.UnixMilli()})
		}
	}
	return nil
}

// convertedChunk bounds the ids of one ConvertedInto query: about 11 KB
// of URL-encoded SOQL, under the 16 KB a GET query allows.
const convertedChunk = 400

// ConvertedInto finds, for Contacts, the Leads converted into them
// (Lead.ConvertedContactId), so a person the ledger knows by a Lead id is
// followed to its Contact (issue 22) rather than taken for a stranger.
func ConvertedInto(ctx context.Context, c sfcreds.Client, contacts []idset.ID, fn func(lead, contact idset.ID)) error {
	ctx = budget.WithKind(ctx, budget.Lookup)
	for start := 0; start < len(contacts); start += convertedChunk {
		chunk := contacts[start:min(start+convertedChunk, len(contacts))]
		quoted := make([]string, len(chunk))
		for i, id := range chunk {
			quoted[i] = "'" + id.String() + "'"
		}
		soql := "SELECT Id, ConvertedContactId FROM Lead WHERE IsConverted = true AND ConvertedContactId IN (" + strings.Join(quoted, ",") + ")"
		for rec, err := range c.Query(ctx, soql) {
			if err != nil {
				return fmt.Errorf("find Leads converted into %d Contacts: %w", len(chunk), err)
			}
			lead, err := idset.Parse(rec.ID)
			if err != nil {
				return fmt.Errorf("converted Lead: malformed id from Salesforce: %w", err)
			}
			contact, err := idset.Parse(rec.String("ConvertedContactId"))
			if err != nil {
				return fmt.Errorf("converted Lead %s: malformed ConvertedContactId from Salesforce: %w", rec.ID, err)
			}
			fn(lead, contact)
		}
	}
	return nil
}
