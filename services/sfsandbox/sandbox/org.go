package sandbox

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors of the Go control API.
var (
	ErrNotFound     = errors.New("record not found")
	ErrNotLead      = errors.New("not a lead")
	ErrConverted    = errors.New("lead already converted")
	ErrDeleted      = errors.New("record is deleted")
	ErrNotDeleted   = errors.New("record is not deleted")
	ErrInvalidID    = errors.New("invalid record id")
	ErrJobNotFound  = errors.New("bulk job not found")
	ErrInvalidState = errors.New("invalid bulk job state")
)

// Org is one emulated Salesforce org.
type Org struct {
	sb     *Sandbox
	st     *store
	orgID  sfid
	userID sfid
	pubKey *rsa.PublicKey

	mu            sync.Mutex // guards everything below
	cfg           OrgConfig
	origin        string // SetURL
	sessions      map[string]*session
	refreshTokens map[string]bool
	usage         int
	bulkQueryJobs int
	latency       time.Duration
	faults        []*faultState
	faultSeq      int
	calls         []Call
	changes       []Change
	cursors       map[string]*cursor
	cursorOrder   []string
	jobs          map[string]*bulkJob
	jobOrder      []string
	inflight      map[uint64]time.Time
	inflightSeq   uint64
	rng           *rand.Rand
	seq           uint64   // locators and job ids
	cdc           cdcState // change events and Pub/Sub state (cdc.go, pubsub.go)
}

// Change is one entry of the change feed: what changed and who changed it
// (Sforce-Call-Options client of the API call, "ui" or "automation" for control edits).
type Change struct {
	RecordID      string    `json:"recordId"`
	Type          string    `json:"type"`
	ChangeType    string    `json:"changeType"` // CREATE, UPDATE, DELETE, UNDELETE
	ChangedFields []string  `json:"changedFields"`
	Origin        string    `json:"origin"`
	At            time.Time `json:"at"`
}

func newOrg(sb *Sandbox, cfg OrgConfig) (*Org, error) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(cfg.Name))
	n := h.Sum64() % 1_000_000_000
	o := &Org{
		sb: sb, st: newStore(), cfg: cfg,
		orgID:         makeID(prefixOrg, n),
		userID:        makeID(prefixUser, n),
		sessions:      map[string]*session{},
		refreshTokens: map[string]bool{},
		cursors:       map[string]*cursor{},
		jobs:          map[string]*bulkJob{},
		inflight:      map[uint64]time.Time{},
		rng:           rand.New(rand.NewPCG(n, 42)),
	}
	if cfg.JWTPublicKeyPEM != "" {
		k, err := jwt.ParseRSAPublicKeyFromPEM([]byte(cfg.JWTPublicKeyPEM))
		if err != nil {
			return nil, fmt.Errorf("parse jwtPublicKeyPEM: %w", err)
		}
		o.pubKey = k
	}
	return o, nil
}

// Name is the org's path segment.
func (o *Org) Name() string { return o.cfg.Name }

// Config returns the org's configuration with defaults applied.
func (o *Org) Config() OrgConfig {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cfg
}

// OrgID is the 18-char organization id (the token's id URL and Pub/Sub tenantid).
func (o *Org) OrgID() string { return o.orgID.String() }

func (o *Org) now() time.Time { return o.sb.now() }

// schemaFor lists the fields of t as configured now.
func (o *Org) schemaFor(t objType) *schema {
	o.mu.Lock()
	defer o.mu.Unlock()
	return buildSchema(t, o.cfg.CustomField, o.cfg.CustomFieldInstalled, o.cfg.CustomFieldWritable)
}

// Seed adds spec.Contacts Contacts and spec.Leads Leads. Exactly
// round(n*OptedOutShare) of each type are opted out (spread evenly), with the
// custom field set alike. It returns the new records only when there are at
// most 100,000 of them (benchmarks seed millions and need no copy).
func (o *Org) Seed(spec SeedSpec) []Record {
	now := msOf(o.now())
	s := o.st
	s.mu.Lock()
	var out []Record
	for t, n := range [numTypes]int{spec.Contacts, spec.Leads} {
		typ := objType(t)
		s.recs[typ] = growRecs(s.recs[typ], n)
		for i := 0; i < n; i++ {
			id := s.newID(typ)
			r := rec{id: id, typ: typ, lastMod: now, modstamp: now}
			r.email = "person" + strconv.FormatUint(s.nextN, 10) + "@example.com"
			opted := int(float64(i+1)*spec.OptedOutShare) > int(float64(i)*spec.OptedOutShare)
			r.set(flagOptedOut, opted)
			r.set(flagCustom, opted)
			p := s.upsert(r)
			if spec.Contacts+spec.Leads <= 100000 {
				out = append(out, p.toRecord())
			}
		}
	}
	s.mu.Unlock()
	return out
}

func growRecs(list []rec, n int) []rec {
	if cap(list)-len(list) >= n {
		return list
	}
	grown := make([]rec, len(list), len(list)+n)
	copy(grown, list)
	return grown
}

// Put inserts or replaces a record; an empty ID is generated from Type. It
// panics on an invalid ID or Type: that is a test's own mistake.
func (o *Org) Put(r Record) Record {
	custom := o.cdcCustom()
	var ch cdcChange
	defer func() {
		// Outside the store lock: commitCDC takes Org.mu (lock order o.mu, st.mu).
		if ch.id != "" && (ch.kind != ChangeUpdate || len(ch.fields) > 0) {
			o.commitCDC("", []cdcChange{ch})
		}
	}()
	s := o.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.ID == "" {
		t, ok := typeByName(r.Type)
		if !ok {
			panic(fmt.Sprintf("sandbox.Put: type %q is neither Contact nor Lead", r.Type))
		}
		r.ID = s.newID(t).String()
	}
	if r.SystemModstamp.IsZero() {
		r.SystemModstamp = o.now()
	}
	if r.LastModifiedDate.IsZero() {
		r.LastModifiedDate = r.SystemModstamp
	}
	in, err := fromRecord(r)
	if err != nil {
		panic("sandbox.Put: " + err.Error())
	}
	old, existed := s.lookup(in.id)
	if existed && old.typ != in.typ {
		panic("sandbox.Put: id already used by another type")
	}
	var before rec
	if existed {
		before = *old
	}
	p := s.upsert(in)
	if existed {
		ch = diffChange(&before, p, custom, true)
	} else {
		ch = createChange(p, custom)
	}
	return p.toRecord()
}

// Get returns a record by 15- or 18-char ID.
func (o *Org) Get(id string) (Record, bool) {
	sid, ok := parseID(id)
	if !ok {
		return Record{}, false
	}
	o.st.mu.RLock()
	defer o.st.mu.RUnlock()
	r, ok := o.st.lookup(sid)
	if !ok {
		return Record{}, false
	}
	return r.toRecord(), true
}

// Records returns a snapshot of every record sorted by ID.
func (o *Org) Records() []Record { return o.st.snapshot() }

// Edit applies a Salesforce user's edit (UI): bumps SystemModstamp and
// LastModifiedDate. f must not change ID or Type.
func (o *Org) Edit(id string, f func(*Record)) error {
	return o.edit(id, f, true, "ui")
}

// EditAsAutomation applies an automated change (flow, trigger, integration
// user's background job): bumps only SystemModstamp.
func (o *Org) EditAsAutomation(id string, f func(*Record)) error {
	return o.edit(id, f, false, "automation")
}

func (o *Org) edit(id string, f func(*Record), user bool, origin string) error {
	sid, ok := parseID(id)
	if !ok {
		return fmt.Errorf("edit %q: %w", id, ErrInvalidID)
	}
	custom := o.cdcCustom()
	s := o.st
	s.mu.Lock()
	r, ok := s.lookup(sid)
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("edit %s: %w", id, ErrNotFound)
	}
	beforeRec := *r
	before := r.toRecord()
	after := before
	f(&after)
	after.ID, after.Type = before.ID, before.Type
	now := o.now()
	after.SystemModstamp = now
	if user {
		after.LastModifiedDate = now
	}
	in, err := fromRecord(after)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("edit %s: %w", id, err)
	}
	*r = in
	ch := diffChange(&beforeRec, r, custom, user)
	s.mu.Unlock()
	o.recordChange(before.ID, before.Type, "UPDATE", diffFields(before, after), origin)
	// Control-API edits stand for UI edits and automation: no API, so an
	// empty changeOrigin (§9.6). [inference] An automated change that alters
	// no field in the event schema (only SystemModstamp moves) sends no event.
	if len(ch.fields) > 0 {
		o.commitCDC("", []cdcChange{ch})
	}
	return nil
}

func diffFields(a, b Record) []string {
	var out []string
	if a.Email != b.Email {
		out = append(out, "Email")
	}
	if a.HasOptedOutOfEmail != b.HasOptedOutOfEmail {
		out = append(out, "HasOptedOutOfEmail")
	}
	if a.CustomOptOut != b.CustomOptOut {
		out = append(out, "CustomOptOut")
	}
	if a.IsConverted != b.IsConverted {
		out = append(out, "IsConverted")
	}
	return out
}

// Delete moves a record to the recycle bin.
func (o *Org) Delete(id string) error { return o.setDeleted(id, true) }

// Undelete restores a record from the recycle bin.
func (o *Org) Undelete(id string) error { return o.setDeleted(id, false) }

func (o *Org) setDeleted(id string, del bool) error {
	sid, ok := parseID(id)
	if !ok {
		return fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	custom := o.cdcCustom()
	s := o.st
	s.mu.Lock()
	r, ok := s.lookup(sid)
	switch {
	case !ok:
		s.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	case del && r.has(flagDeleted):
		s.mu.Unlock()
		return fmt.Errorf("delete %s: %w", id, ErrDeleted)
	case !del && !r.has(flagDeleted):
		s.mu.Unlock()
		return fmt.Errorf("undelete %s: %w", id, ErrNotDeleted)
	}
	r.set(flagDeleted, del)
	now := msOf(o.now())
	r.modstamp, r.lastMod = now, now
	typ := r.typ.String()
	state := recFields(r, custom)
	s.mu.Unlock()
	kind := "DELETE"
	if !del {
		kind = "UNDELETE"
	}
	o.recordChange(sid.String(), typ, kind, nil, "ui")
	o.commitCDC("", []cdcChange{{entity: typ, kind: kind, id: sid.String(), state: state}})
	return nil
}

// ConvertLead converts a Lead into a new Contact carrying its email and
// opt-out values; the Lead becomes IsConverted with ConvertedContactId.
func (o *Org) ConvertLead(leadID string) (Record, error) {
	sid, ok := parseID(leadID)
	if !ok {
		return Record{}, fmt.Errorf("convert %q: %w", leadID, ErrInvalidID)
	}
	custom := o.cdcCustom()
	s := o.st
	s.mu.Lock()
	l, ok := s.lookup(sid)
	switch {
	case !ok:
		s.mu.Unlock()
		return Record{}, fmt.Errorf("convert %s: %w", leadID, ErrNotFound)
	case l.typ != typeLead:
		s.mu.Unlock()
		return Record{}, fmt.Errorf("convert %s: %w", leadID, ErrNotLead)
	case l.has(flagConverted):
		s.mu.Unlock()
		return Record{}, fmt.Errorf("convert %s: %w", leadID, ErrConverted)
	case l.has(flagDeleted):
		s.mu.Unlock()
		return Record{}, fmt.Errorf("convert %s: %w", leadID, ErrDeleted)
	}
	now := msOf(o.now())
	c := rec{id: s.newID(typeContact), typ: typeContact, email: l.email, lastMod: now, modstamp: now}
	c.set(flagOptedOut, l.has(flagOptedOut))
	c.set(flagCustom, l.has(flagCustom))
	cid := c.id
	// upsert may grow the Contact slice; the Lead pointer stays valid (other slice).
	stored := s.upsert(c).toRecord()
	l.set(flagConverted, true)
	l.converted = &cid
	l.lastMod, l.modstamp = now, now
	s.mu.Unlock()
	o.recordChange(stored.ID, "Contact", "CREATE", nil, "ui")
	o.recordChange(sid.String(), "Lead", "UPDATE", []string{"IsConverted", "ConvertedContactId"}, "ui")
	o.commitCDC("", conversionChanges(&c, sid.String(), custom, now))
	return stored, nil
}

// SetCustomField installs/uninstalls the custom field and sets its FLS.
func (o *Org) SetCustomField(installed, writable bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cfg.CustomFieldInstalled = installed
	o.cfg.CustomFieldWritable = writable
}

// SetLatency adds d to every data call.
func (o *Org) SetLatency(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.latency = d
}

// recordChange appends to the bounded change feed.
func (o *Org) recordChange(id, typ, kind string, fields []string, origin string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.changes = append(o.changes, Change{RecordID: id, Type: typ, ChangeType: kind, ChangedFields: fields, Origin: origin, At: o.now()})
	o.changes = trimTail(o.changes, o.cfg.Behavior.MaxChanges)
}

// Changes returns the change feed, oldest first.
func (o *Org) Changes() []Change {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Change(nil), newest(o.changes, o.cfg.Behavior.MaxChanges)...)
}

// logCall appends to the bounded call log and notifies Config.OnCall.
func (o *Org) logCall(c Call) {
	if c.At.IsZero() {
		c.At = o.now()
	}
	o.mu.Lock()
	o.calls = append(o.calls, c)
	o.calls = trimTail(o.calls, o.cfg.Behavior.MaxCallLog)
	o.mu.Unlock()
	if o.sb.onCal != nil {
		o.sb.onCal(o.cfg.Name, c)
	}
}

// Calls returns the call log, oldest first.
func (o *Org) Calls() []Call {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Call(nil), newest(o.calls, o.cfg.Behavior.MaxCallLog)...)
}

// ResetCalls empties the call log (the API usage counter is kept).
func (o *Org) ResetCalls() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = nil
}

// nextSeq returns a fresh number for locators and job ids.
func (o *Org) nextSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	return o.seq
}

// trimTail keeps the newest max entries. It copies only once the slice has
// doubled past max, so appending stays O(1) amortised for long runs.
func trimTail[T any](s []T, max int) []T {
	if max <= 0 {
		return s[:0]
	}
	if len(s) <= 2*max {
		return s
	}
	return append(s[:0:0], s[len(s)-max:]...)
}

// newest returns the last max entries of s.
func newest[T any](s []T, max int) []T {
	if max >= 0 && len(s) > max {
		return s[len(s)-max:]
	}
	return s
}

// Merge merges losers into winner as a user's merge in Salesforce's UI
// does: the losers go to the recycle bin and the winner is updated, in one
// transaction, so the change feed has one DELETE for the losers and one
// UPDATE for the winner (spec §9.8; Apex semantics, re-parented children
// send nothing). All records must be of the winner's type and live.
func (o *Org) Merge(winner string, losers []string) error {
	wid, ok := parseID(winner)
	if !ok {
		return fmt.Errorf("merge into %q: %w", winner, ErrInvalidID)
	}
	if len(losers) == 0 || len(losers) > 2 {
		return fmt.Errorf("merge into %s: %d records to merge, want 1 or 2", winner, len(losers))
	}
	custom := o.cdcCustom()
	s := o.st
	s.mu.Lock()
	w, ok := s.lookup(wid)
	if !ok || w.has(flagDeleted) {
		s.mu.Unlock()
		return fmt.Errorf("merge into %s: %w", winner, ErrNotFound)
	}
	var lrecs []*rec
	for _, l := range losers {
		lid, ok := parseID(l)
		if !ok {
			s.mu.Unlock()
			return fmt.Errorf("merge %q: %w", l, ErrInvalidID)
		}
		r, ok := s.lookup(lid)
		if !ok || r.has(flagDeleted) || r.typ != w.typ || lid == wid {
			s.mu.Unlock()
			return fmt.Errorf("merge %s into %s: %w", l, winner, ErrNotFound)
		}
		lrecs = append(lrecs, r)
	}
	now := msOf(o.now())
	var chs []cdcChange
	var ids []string
	for _, r := range lrecs {
		r.set(flagDeleted, true)
		r.modstamp, r.lastMod = now, now
		chs = append(chs, cdcChange{entity: r.typ.String(), kind: ChangeDelete, id: r.id.String(), state: recFields(r, custom)})
		ids = append(ids, r.id.String())
	}
	before := *w
	w.modstamp, w.lastMod = now, now
	chs = append(chs, diffChange(&before, w, custom, true))
	typ := w.typ.String()
	s.mu.Unlock()
	for _, id := range ids {
		o.recordChange(id, typ, "DELETE", nil, "ui")
	}
	o.recordChange(wid.String(), typ, "UPDATE", nil, "ui")
	o.commitCDC("", chs)
	return nil
}
