// Package proof is what proves a person's opt-out: every ledger entry that
// is the person (found by Sales Connect id, Salesforce id or email hash),
// each with its full history, and the tenant-wide exports of the trail and
// of each opt-out's time to honour. optoutctl and the admin page both show
// it from here.
package proof

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Query is who an operator asks about: one of a Sales Connect id, a
// Salesforce id or an email address's keyed hash (logx.HashEmail; the
// address itself is never stored).
type Query struct {
	Tenant string
	SC     string
	SF     string
	Email  string // an email hash, "email:…"
}

// Key kinds a Query is read as (ParseQuery's by).
const (
	ByAuto  = "auto"
	BySC    = "sc"
	BySF    = "sf"
	ByEmail = "email"
)

// What names the id asked about, for messages: "Salesforce id 003…".
func (q Query) What() string {
	switch {
	case q.SF != "":
		return "Salesforce id " + q.SF
	case q.Email != "":
		return "email " + q.Email
	}
	return "Sales Connect id " + q.SC
}

func (q Query) node() string {
	switch {
	case q.SC != "":
		return "sc:" + q.SC
	case q.Email != "":
		return "em:" + q.Email
	}
	return "sf:" + q.SF
}

// ParseQuery reads an id. With by "auto" an address with an @ is an email
// (hashed here with the install's key; "email:…" is taken as its hash), a valid 15- or 18-character Contact
// or Lead id is a Salesforce id, and anything else a Sales Connect id.
func ParseQuery(tenant, id, by string) (Query, error) {
	q := Query{Tenant: tenant}
	asSF := func() error {
		n, err := sfid.Normalize(id)
		if err != nil {
			return err
		}
		if sfid.ObjectType(n) == "" {
			return errors.New("not a Contact (003) or Lead (00Q) id")
		}
		q.SF = n
		return nil
	}
	asEmail := func() error {
		if strings.HasPrefix(id, "email:") && !strings.Contains(id, "@") {
			q.Email = id // already the hash (as the admin page's links carry it)
			return nil
		}
		if !strings.Contains(id, "@") {
			return errors.New("not an email address")
		}
		if !logx.EmailHashKeyed() {
			// A random key of this process would match nothing stored.
			return errors.New("looking up by email needs the install's email hash key (" + logx.EnvEmailHashKeyFile + " or " + logx.EnvEmailHashKey + ")")
		}
		q.Email = logx.HashEmail(id)
		return nil
	}
	switch by {
	case BySC:
		q.SC = id
	case BySF:
		return q, asSF()
	case ByEmail:
		return q, asEmail()
	case ByAuto, "":
		if strings.Contains(id, "@") || strings.HasPrefix(id, "email:") {
			return q, asEmail()
		}
		if asSF() != nil {
			q.SC = id
		}
	default:
		return q, fmt.Errorf("by %q: want auto, sc, sf or email", by)
	}
	return q, nil
}

// Source is where the proof is read: the ledger and its audit trail.
type Source struct {
	Ledger   *ledger.Ledger
	JS       jetstream.JetStream
	Topology natsx.Topology
}

// Person is one ledger entry with its full history.
type Person struct {
	Key      string               `json:"key"`
	Revision uint64               `json:"revision"`
	Entry    *optout.Entry        `json:"entry"`
	History  []ledger.AuditRecord `json:"history"`
	// Missing counts changes of the entry its history lacks: older ones the
	// audit stream no longer holds, or the newest ones while the audit
	// stream (which sources the ledger asynchronously) catches up.
	Missing uint64 `json:"missing,omitempty"`
	// Events are the applied events still held by the events stream, by id.
	Events map[string]EventInfo `json:"events"`
}

// auditCatchUp bounds how long find waits for the audit stream to copy an
// entry's newest change (it sources the ledger asynchronously, normally
// within milliseconds).
const auditCatchUp = 3 * time.Second

// waitAudited waits up to auditCatchUp for the audit stream to copy every
// ledger change made so far; past that it lets the caller read what is
// there (readPerson reports an entry's gaps) rather than fail the lookup.
func waitAudited(ctx context.Context, js jetstream.JetStream, topo natsx.Topology) error {
	wctx, cancel := context.WithTimeout(ctx, auditCatchUp)
	defer cancel()
	err := ledger.WaitAudited(wctx, js, topo)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// Find returns every ledger entry that is this person, with its history,
// the person's live entry first; none when neither the ledger nor the audit
// trail knows them. The events they applied are looked up (Person.Events)
// while the events stream still holds them.
//
// The ledger keeps one entry per person, keyed by Sales Connect id when
// known, else by Salesforce id; an entry made under a Salesforce id before
// Sales Connect linked the person is merged into the person's entry and
// retired (MergedInto), and a converted Lead's person moves to its Contact
// (ConvertedFrom). A compliance answer must include all of them: a pass
// over the tenant's audit trail links keys, ids and merges, then each
// connected key's own history is read.
func Find(ctx context.Context, src Source, q Query) ([]Person, error) {
	people, err := find(ctx, src.Ledger, src.JS, src.Topology, q)
	if err != nil || len(people) == 0 {
		return people, err
	}
	ids := map[string]bool{}
	for _, p := range people {
		for _, id := range AppliedEvents(p.History) {
			if id != "" {
				ids[id] = true
			}
		}
	}
	events, err := lookupEvents(ctx, src.JS, src.Topology, q.Tenant, ids)
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", q.What(), err)
	}
	for i := range people {
		people[i].Events = map[string]EventInfo{}
		for _, id := range AppliedEvents(people[i].History) {
			if ev, ok := events[id]; ok {
				people[i].Events[id] = ev
			}
		}
	}
	return people, nil
}

func find(ctx context.Context, l *ledger.Ledger, js jetstream.JetStream, topo natsx.Topology, q Query) ([]Person, error) {
	edges := map[string]map[string]bool{}
	link := func(a, b string) {
		for _, p := range [][2]string{{a, b}, {b, a}} {
			if edges[p[0]] == nil {
				edges[p[0]] = map[string]bool{}
			}
			edges[p[0]][p[1]] = true
		}
	}
	addEntry := func(key string, e optout.Entry) {
		if e.SalesConnectID != "" {
			link("key:"+key, "sc:"+e.SalesConnectID)
		}
		if e.SalesforceID != "" {
			link("key:"+key, "sf:"+e.SalesforceID)
		}
		for _, id := range e.ConvertedFrom {
			link("key:"+key, "sf:"+id)
		}
		if e.MergedInto != "" {
			link("key:"+key, "key:"+e.MergedInto)
		}
		// Only the address asked about: persons who share an address
		// (duplicate records) are not one person otherwise.
		if q.Email != "" && e.EmailHash == q.Email {
			link("key:"+key, "em:"+e.EmailHash)
		}
	}
	direct := ""
	if q.Email == "" {
		direct = optout.Key(q.Tenant, q.SC, q.SF)
	}
	primary := direct
	if direct != "" {
		// The direct key and the entry it leads to, in case their audit
		// records are missing. (An email is found by the audit pass only.)
		it, err := l.Get(ctx, direct)
		switch {
		case err == nil:
			addEntry(direct, it.Entry)
			link(q.node(), "key:"+direct)
			live, err := l.Get(ctx, direct, ledger.FollowMerges())
			if err == nil {
				primary = live.Key
				addEntry(live.Key, live.Entry)
			} else if !errors.Is(err, ledger.ErrNotFound) {
				return nil, err
			}
		case !errors.Is(err, ledger.ErrNotFound):
			return nil, err
		}
	}
	// The audit pass must see every change made so far: a merge the audit
	// stream has not copied yet would hide the retired entry.
	if err := waitAudited(ctx, js, topo); err != nil {
		return nil, err
	}
	if err := ledger.ReadAudit(ctx, js, topo, q.Tenant, func(r ledger.AuditRecord) error {
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

	out := make([]Person, 0, len(keys))
	for k := range keys {
		p, err := readPerson(ctx, l, js, topo, k)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	// The person's live entry first, then the queried key, then by key,
	// for stable output.
	rank := func(k string) int {
		switch k {
		case primary:
			return 0
		case direct:
			return 1
		}
		return 2
	}
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := rank(out[i].Key), rank(out[j].Key); ri != rj {
			return ri < rj
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// readPerson reads one key's entry and history. The audit stream copies a
// change a moment after it is stored: an entry newer than its last audit
// record is read again until the record arrives (or auditCatchUp passes,
// and the gap is reported in Missing).
func readPerson(ctx context.Context, l *ledger.Ledger, js jetstream.JetStream, topo natsx.Topology, key string) (Person, error) {
	deadline := time.Now().Add(auditCatchUp)
	for {
		p := Person{Key: key, History: []ledger.AuditRecord{}}
		it, err := l.Get(ctx, key)
		switch {
		case err == nil:
			p.Entry, p.Revision = &it.Entry, it.Rev
		case !errors.Is(err, ledger.ErrNotFound):
			return p, err
		}
		if err := ledger.ReadPersonAudit(ctx, js, topo, key, func(r ledger.AuditRecord) error {
			p.History = append(p.History, r)
			return nil
		}); err != nil {
			return p, err
		}
		p.Missing = missing(p)
		if p.Entry == nil || p.Missing == 0 || !behind(p) || time.Now().After(deadline) {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// behind reports whether the history lacks the entry's current version.
func behind(p Person) bool {
	n := len(p.History)
	return n == 0 || p.History[n-1].Entry.Version < p.Entry.Version
}

// missing counts the versions of the entry its history does not hold.
func missing(p Person) uint64 {
	latest := uint64(0)
	if p.Entry != nil {
		latest = p.Entry.Version
	}
	for _, r := range p.History {
		latest = max(latest, r.Entry.Version)
	}
	if have := uint64(len(p.History)); latest > have {
		return latest - have
	}
	return 0
}

// EventOf is the event an entry's change applied last ("" if none did).
func EventOf(e optout.Entry) string {
	if e.LastEvent != nil {
		return e.LastEvent.ID
	}
	if n := len(e.RecentEvents); n > 0 {
		return e.RecentEvents[n-1]
	}
	return ""
}

// AppliedEvents returns, for each record of one key's history, the event
// that change applied ("" for a change no event made, such as Salesforce
// confirming a write).
func AppliedEvents(history []ledger.AuditRecord) []string {
	out := make([]string, len(history))
	prev := ""
	for i, r := range history {
		last := EventOf(r.Entry)
		if last != prev {
			out[i] = last
		}
		prev = last
	}
	return out
}
