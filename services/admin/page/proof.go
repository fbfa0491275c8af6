package page

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// personPage is one person's proof: every ledger entry that is them, each
// with its history.
type personPage struct {
	layout
	Tenant, ID, By string
	What           string
	Searched       bool
	Problem        string
	People         []personView
	// DownloadID and DownloadBy name the person in the download links.
	DownloadID, DownloadBy string
}

type personView struct {
	proof.Person
	Changes []changeView
}

type changeView struct {
	At, Event, Result, Pushed, Trace string
}

// person looks a person up by Sales Connect id, Salesforce id or email
// (matched through the keyed hash) and shows the trail; with format=csv or
// format=json it downloads the same rows optoutctl person export writes.
func (h *handler) person(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	qv := r.URL.Query()
	if r.Method == http.MethodPost {
		// The search form posts, so an email address typed into it stays
		// out of URLs (browser history, proxies' access logs). A lookup
		// changes nothing, so it needs no form token.
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if err := r.ParseForm(); err != nil {
			h.message(w, http.StatusBadRequest, "Form not understood", "The form could not be read. Reload the page and try again.")
			return
		}
		qv = r.PostForm
	}
	p := personPage{layout: h.layout(r, "Proof of opt-out in "+t), Tenant: t, ID: strings.TrimSpace(qv.Get("id")), By: qv.Get("by")}
	if p.By == "" {
		p.By = proof.ByAuto
	}
	if p.ID == "" {
		h.render(w, http.StatusOK, pages.person, p)
		return
	}
	p.Searched = true
	q, err := proof.ParseQuery(t, p.ID, p.By)
	if err != nil {
		p.Problem = fmt.Sprintf("%q cannot be looked up: %v.", p.ID, err)
		h.render(w, http.StatusUnprocessableEntity, pages.person, p)
		return
	}
	p.What = q.What()
	people, err := proof.Find(r.Context(), *h.d.Proof, q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if f := qv.Get("format"); f != "" {
		download(h, w, r, f, t+"-person", func(write func(proof.Row) error) error {
			for _, row := range proof.PersonRows(people) {
				if err := write(row); err != nil {
					return err
				}
			}
			return nil
		}, proof.RowHeader)
		return
	}
	for _, pe := range people {
		p.People = append(p.People, personViewOf(pe))
	}
	// The downloads name the person by what is stored: an email by its hash.
	p.DownloadID, p.DownloadBy = p.ID, p.By
	if q.Email != "" {
		p.DownloadID, p.DownloadBy = q.Email, proof.ByEmail
	}
	status := http.StatusOK
	if len(people) == 0 {
		status = http.StatusNotFound
	}
	h.render(w, status, pages.person, p)
}

func personViewOf(p proof.Person) personView {
	v := personView{Person: p}
	events := proof.AppliedEvents(p.History)
	for i, r := range p.History {
		e := r.Entry
		c := changeView{At: r.At.UTC().Format(time.RFC3339), Trace: e.TraceID}
		if id := events[i]; id != "" {
			c.Event = id
			if ev := e.LastEvent; ev != nil && ev.ID == id {
				c.Event = fmt.Sprintf("%s: %s by %s at %s", id, ev.Action, ev.Source, ev.OccurredAt.UTC().Format(time.RFC3339))
				if ev.Reason != "" {
					c.Event += fmt.Sprintf(", reason %q", ev.Reason)
				}
			} else if info, ok := p.Events[id]; ok {
				c.Event = fmt.Sprintf("%s: %s by %s at %s", id, info.Action, info.Source, info.OccurredAt.UTC().Format(time.RFC3339))
			}
		}
		opted := "not opted out"
		if e.OptedOut {
			opted = "opted out"
		}
		c.Result = fmt.Sprintf("%s; %s: %s", opted, e.State, e.Reason)
		if e.Confirmed != nil {
			c.Pushed = fmt.Sprintf("%s = %t, confirmed by Salesforce at %s", e.Field, *e.Confirmed, e.ConfirmedAt.UTC().Format(time.RFC3339))
		}
		v.Changes = append(v.Changes, c)
	}
	return v
}

// compliance downloads the tenant's compliance export: each opt-out
// received in [from, to) (dates, UTC; either may be empty), when it was
// received, when Salesforce confirmed it, how, and the time to honour it.
func (h *handler) compliance(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	qv := r.URL.Query()
	var bounds [2]time.Time
	for i, name := range []string{"from", "to"} {
		v := strings.TrimSpace(qv.Get(name))
		if v == "" {
			continue
		}
		d, err := time.Parse(time.DateOnly, v)
		if err != nil {
			h.message(w, http.StatusBadRequest, "Date not understood", fmt.Sprintf("%q for %s is not a date: enter it as YYYY-MM-DD.", v, name))
			return
		}
		bounds[i] = d
	}
	if !bounds[1].IsZero() {
		bounds[1] = bounds[1].AddDate(0, 0, 1) // "to" is inclusive
	}
	format := qv.Get("format")
	if format == "" {
		format = proof.CSV
	}
	download(h, w, r, format, t+"-compliance", func(write func(proof.Honour) error) error {
		return proof.Compliance(r.Context(), *h.d.Proof, t, bounds[0], bounds[1], write)
	}, proof.HonourHeader)
}

// download streams rows as a CSV or JSON attachment. An error after the
// first bytes cannot change the status any more: it ends the body with a
// line saying the export is incomplete, so a truncated file is never taken
// for a whole one.
func download[R interface{ CSV() []string }](h *handler, w http.ResponseWriter, r *http.Request, format, name string, each func(func(R) error) error, header []string) {
	if format != proof.CSV && format != proof.JSON {
		h.message(w, http.StatusBadRequest, "Format not understood", fmt.Sprintf("format %q: download as csv or json.", format))
		return
	}
	typ := "text/csv; charset=utf-8"
	if format == proof.JSON {
		typ = "application/json"
	}
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s"`, name, format))
	sink, err := proof.NewSink[R](w, format, header)
	if err == nil {
		err = each(sink.Write)
	}
	if err == nil {
		err = sink.Close()
	}
	if err != nil && !errors.Is(err, r.Context().Err()) {
		h.d.Log.Error().Err(err).Str(logx.FieldTenant, r.PathValue("tenant")).Str("path", r.URL.Path).Msg("admin page export failed")
		fmt.Fprintf(w, "\nEXPORT INCOMPLETE: %s\n", logx.Redact(err.Error()))
	}
}
