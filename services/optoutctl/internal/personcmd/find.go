package personcmd

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/sfid"
)

// query is who an operator asks about: a Sales Connect id or a Salesforce id.
type query struct {
	tenant string
	sc, sf string
}

func (q query) node() string {
	if q.sc != "" {
		return "sc:" + q.sc
	}
	return "sf:" + q.sf
}

// parseQuery reads an id. With by "auto" an id that is a valid 15- or
// 18-character Contact or Lead id is a Salesforce id; anything else is a
// Sales Connect id.
func parseQuery(tenant, id, by string) (query, error) {
	q := query{tenant: tenant}
	asSF := func() error {
		n, err := sfid.Normalize(id)
		if err != nil {
			return err
		}
		if sfid.ObjectType(n) == "" {
			return errors.New("not a Contact (003) or Lead (00Q) id")
		}
		q.sf = n
		return nil
	}
	switch by {
	case "sc":
		q.sc = id
	case "sf":
		if err := asSF(); err != nil {
			return q, err
		}
	default:
		if asSF() != nil {
			q.sc = id
		}
	}
	return q, nil
}

// person is one ledger entry with its full history.
type person struct {
	Key      string               `json:"key"`
	Revision uint64               `json:"revision"`
	Entry    *ledger.Entry        `json:"entry"`
	History  []ledger.AuditRecord `json:"history"`
	// Events are the applied events still held by the events stream, by id.
	Events map[string]eventInfo `json:"events"`
}

// find returns every ledger entry that is this person, with its history.
//
// The ledger keys a person by Sales Connect id when known, else by
// Salesforce id, so one human can have two entries (an early event carried
// only the Salesforce id), and an entry's Salesforce id can change (a
// converted Lead). A compliance answer must include all of them: the first
// pass over the tenant's audit trail links keys and ids, the second collects
// the records of every key connected to the query.
func find(ctx context.Context, l *ledger.Ledger, js jetstream.JetStream, topo natsx.Topology, q query) ([]person, error) {
	stream, subject := topo.AuditStream(), topo.AuditSubject(q.tenant)
	edges := map[string]map[string]bool{}
	link := func(a, b string) {
		for _, p := range [][2]string{{a, b}, {b, a}} {
			if edges[p[0]] == nil {
				edges[p[0]] = map[string]bool{}
			}
			edges[p[0]][p[1]] = true
		}
	}
	addEntry := func(key string, e ledger.Entry) {
		if e.SalesConnectID != "" {
			link("key:"+key, "sc:"+e.SalesConnectID)
		}
		if e.SalesforceID != "" {
			link("key:"+key, "sf:"+e.SalesforceID)
		}
	}
	// The direct key, in case its audit records are missing.
	direct := ledger.Key(q.tenant, q.sc, q.sf)
	if e, _, err := l.Get(ctx, direct); err == nil {
		addEntry(direct, e)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return nil, err
	}
	if err := ledger.ReadAudit(ctx, js, stream, subject, func(r ledger.AuditRecord) error {
		addEntry(r.Key, r.Entry)
		return nil
	}); err != nil {
		return nil, err
	}

	keys := map[string]bool{}
	seen := map[string]bool{q.node(): true}
	for todo := []string{q.node()}; len(todo) > 0; todo = todo[1:] {
		for next := range edges[todo[0]] {
			if seen[next] {
				continue
			}
			seen[next] = true
			todo = append(todo, next)
			if k, ok := strings.CutPrefix(next, "key:"); ok {
				keys[k] = true
			}
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}

	byKey := map[string]*person{}
	for k := range keys {
		p := &person{Key: k, History: []ledger.AuditRecord{}}
		e, rev, err := l.Get(ctx, k)
		switch {
		case err == nil:
			p.Entry, p.Revision = &e, rev
		case !errors.Is(err, ledger.ErrNotFound):
			return nil, err
		}
		byKey[k] = p
	}
	if err := ledger.ReadAudit(ctx, js, stream, subject, func(r ledger.AuditRecord) error {
		if p := byKey[r.Key]; p != nil {
			p.History = append(p.History, r)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]person, 0, len(byKey))
	for _, p := range byKey {
		out = append(out, *p)
	}
	// The queried key first, then by key, for stable output.
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Key == direct) != (out[j].Key == direct) {
			return out[i].Key == direct
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// appliedEvents returns, for each record of one key's history, the event
// that change applied ("" for a change no event made, such as Salesforce
// confirming a write).
func appliedEvents(history []ledger.AuditRecord) []string {
	out := make([]string, len(history))
	prev := ""
	for i, r := range history {
		last := ""
		if n := len(r.Entry.RecentEvents); n > 0 {
			last = r.Entry.RecentEvents[n-1]
		}
		if last != prev {
			out[i] = last
		}
		prev = last
	}
	return out
}
