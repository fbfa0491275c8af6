package sandbox

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Change Data Capture (spec §9.6–9.8, "Emulator must" 14): every write that
// reaches the store is turned into change events, one transaction at a time,
// kept per org for the retention window and served by the Pub/Sub server
// (pubsub.go). Events are held in the compact form below and Avro-encoded
// only when delivered (cdcschema.go).

// Change types of ChangeEventHeader.changeType (§9.6).
const (
	ChangeCreate      = "CREATE"
	ChangeUpdate      = "UPDATE"
	ChangeDelete      = "DELETE"
	ChangeUndelete    = "UNDELETE"
	ChangeGapCreate   = "GAP_CREATE"
	ChangeGapUpdate   = "GAP_UPDATE"
	ChangeGapDelete   = "GAP_DELETE"
	ChangeGapUndelete = "GAP_UNDELETE"
	ChangeGapOverflow = "GAP_OVERFLOW"
)

// cdcField is one field value of a change; a nil value means set to null
// (it goes to nulledFields).
type cdcField struct {
	name  string
	value any
}

// cdcChange is one record's change inside a transaction, before merging.
type cdcChange struct {
	entity string // Contact, Lead, Account
	kind   string
	id     string
	fields []cdcField // in no particular order
	state  []cdcField // every field after the change, for channel filters and enrichment
}

// cdcEvent is one stored change event.
type cdcEvent struct {
	seq          uint64 // replay position, org-wide (one shared bus)
	at           int64  // commit time, ms: retention is measured from it
	entity       string
	kind         string
	recordIDs    []string
	origin       string
	txKey        string
	seqNumber    int
	commitNumber int64
	fields       []cdcField
	enriched     []cdcField // post-change values of the fields custom channels filter on or enrich
	schemaID     string     // writer schema the payload is encoded with
}

// cdcState is the org's change feed; guarded by Org.mu.
type cdcState struct {
	events        []cdcEvent
	size          int // record changes retained: the sum of max(1, len(recordIDs))
	lastSeq       uint64
	purgedThrough uint64 // highest seq no longer retained
	commitNumber  int64
	wake          chan struct{} // closed and replaced on every change of the feed or of the Pub/Sub knobs
	schemas       map[string]*entitySchema
	delivered     []int64 // delivery times (ms), for the rolling 24 h allocation
	channels      map[string]*Channel
	streams       map[uint64]*psStream
	streamSeq     uint64
	faults        []*psFaultState
	faultSeq      int
}

func (c *cdcState) init() {
	if c.wake == nil {
		c.wake = make(chan struct{})
		c.schemas = map[string]*entitySchema{}
		c.channels = map[string]*Channel{}
		c.streams = map[uint64]*psStream{}
	}
}

// broadcast wakes every stream; the caller holds Org.mu.
func (c *cdcState) broadcast() {
	close(c.wake)
	c.wake = make(chan struct{})
}

// cdcCustom is the custom opt-out field's name when installed (it is then
// part of the change event schema), else "".
func (o *Org) cdcCustom() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.cfg.CustomFieldInstalled {
		return ""
	}
	return o.cfg.CustomField
}

// recFields lists the CDC-visible fields of a record's state.
func recFields(r *rec, custom string) []cdcField {
	var email any
	if r.email != "" {
		email = r.email
	}
	out := []cdcField{{"Email", email}, {"HasOptedOutOfEmail", r.has(flagOptedOut)}}
	if custom != "" {
		out = append(out, cdcField{custom, r.has(flagCustom)})
	}
	if r.typ == typeLead {
		out = append(out, cdcField{"IsConverted", r.has(flagConverted)})
		var conv any
		if r.converted != nil {
			conv = r.converted.String()
		}
		out = append(out, cdcField{"ConvertedContactId", conv})
	}
	if r.lastMod != 0 {
		out = append(out, cdcField{"LastModifiedDate", r.lastMod})
	}
	return out
}

// diffChange is an UPDATE of the fields whose value differs between before
// and after. LastModifiedDate is among them whenever a user (or API user)
// wrote (§9.6), even within the same millisecond; an automated change
// moves only SystemModstamp, which is not in the event schema. [inference]
// A field written with its current value is not a change: Salesforce
// documents changedFields as the fields "changed".
func diffChange(before, after *rec, custom string, user bool) cdcChange {
	b, a := recFields(before, custom), recFields(after, custom)
	bv := map[string]any{}
	for _, f := range b {
		bv[f.name] = f.value
	}
	c := cdcChange{entity: after.typ.String(), kind: ChangeUpdate, id: after.id.String(), state: a}
	for _, f := range a {
		if old, ok := bv[f.name]; !ok || old != f.value || f.name == "LastModifiedDate" && user {
			c.fields = append(c.fields, f)
		}
	}
	return c
}

// createChange is a CREATE carrying every non-null field (changedFields is
// empty on CREATE, §9.6).
func createChange(r *rec, custom string) cdcChange {
	c := cdcChange{entity: r.typ.String(), kind: ChangeCreate, id: r.id.String(), state: recFields(r, custom)}
	for _, f := range c.state {
		if f.value != nil {
			c.fields = append(c.fields, f)
		}
	}
	return c
}

// changeKey groups identical changes of one transaction into one event
// (§9.8 merged events): same entity, type and the same field values.
func changeKey(c *cdcChange) string {
	fs := slices.Clone(c.fields)
	slices.SortFunc(fs, func(a, b cdcField) int { return strings.Compare(a.name, b.name) })
	var sb strings.Builder
	sb.WriteString(c.entity + "\x00" + c.kind)
	for _, f := range fs {
		fmt.Fprintf(&sb, "\x00%s=%T:%v", f.name, f.value, f.value)
	}
	return sb.String()
}

// commitCDC records one transaction's changes as events: one per entity and
// identical change, many recordIds when merged, ordered by sequenceNumber
// within the transaction. origin is changeOrigin ("" for changes made
// outside the API, as control-API edits stand for UI edits). [inference]
// The transaction commits at one instant, so "identical within 1 s" always
// holds inside it; changes of different transactions are never merged.
func (o *Org) commitCDC(origin string, changes []cdcChange) {
	if len(changes) == 0 {
		return
	}
	now := msOf(o.now())
	o.mu.Lock()
	defer o.mu.Unlock()
	c := &o.cdc
	c.init()
	o.purgeCDCLocked(now)
	type group struct {
		ev  cdcEvent
		key string
	}
	var groups []*group
	byKey := map[string]*group{}
	for i := range changes {
		ch := &changes[i]
		// [inference] Records merge only when the fields custom channels
		// filter on or enrich agree too, so one event is filtered and
		// enriched as a whole.
		enriched := pick(ch.state, o.channelFieldsLocked(ch.entity))
		k := changeKey(ch) + "\x01" + changeKey(&cdcChange{fields: enriched})
		if g, ok := byKey[k]; ok {
			g.ev.recordIDs = append(g.ev.recordIDs, ch.id)
			continue
		}
		g := &group{key: k, ev: cdcEvent{entity: ch.entity, kind: ch.kind, fields: ch.fields, enriched: enriched}}
		if ch.id != "" {
			g.ev.recordIDs = []string{ch.id}
		}
		byKey[k] = g
		groups = append(groups, g)
	}
	txKey := newTxKey()
	c.commitNumber++
	for i, g := range groups {
		ev := g.ev
		c.lastSeq += 1 + uint64(o.rng.IntN(3)) // not contiguous (§9.3)
		ev.seq = c.lastSeq
		ev.at = now
		ev.origin = origin
		ev.txKey = txKey
		ev.seqNumber = i + 1
		ev.commitNumber = c.commitNumber
		ev.schemaID = o.schemaLocked(ev.entity).id
		c.events = append(c.events, ev)
		c.size += weight(&ev)
	}
	// Memory stays bounded: past twice the cap, the oldest go as if expired
	// (trimming only then keeps commits O(1) amortised).
	if max := o.cfg.Behavior.MaxCDCEvents; c.size > 2*max {
		n := 0
		for c.size > max {
			c.size -= weight(&c.events[n])
			n++
		}
		c.purgedThrough = c.events[n-1].seq
		c.events = append(c.events[:0:0], c.events[n:]...)
	}
	c.broadcast()
}

// purgeCDCLocked drops events older than the retention window (72 h by
// default, on the sandbox's clock); the caller holds Org.mu.
func (o *Org) purgeCDCLocked(now int64) {
	c := &o.cdc
	cut := now - o.cfg.Behavior.CDCRetention.Milliseconds()
	n := 0
	for n < len(c.events) && c.events[n].at < cut {
		c.size -= weight(&c.events[n])
		n++
	}
	if n > 0 {
		c.purgedThrough = c.events[n-1].seq
		c.events = append(c.events[:0:0], c.events[n:]...)
	}
}

// weight is what an event counts toward MaxCDCEvents: its record changes.
func weight(e *cdcEvent) int { return max(1, len(e.recordIDs)) }

func newTxKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Replay ids are opaque bytes (§9.3): the position and a check value, so a
// corrupted id is told from a valid one. [inference] The layout is ours.
func (o *Org) replayID(seq uint64) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint32(b[8:], o.replayCheck(seq))
	return b
}

func (o *Org) replayCheck(seq uint64) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(o.orgID.String()))
	_, _ = h.Write([]byte(strconv.FormatUint(seq, 10)))
	return h.Sum32()
}

// parseReplayID returns the position of a replay id, false when it is not one of ours.
func (o *Org) parseReplayID(b []byte) (uint64, bool) {
	if len(b) != 12 {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(b)
	return seq, binary.BigEndian.Uint32(b[8:]) == o.replayCheck(seq)
}

// bitmap renders field indices as §9.7 does: "0x" and an even number of
// uppercase hex digits, bit k set for top-level schema field k.
func bitmap(indices []int) string {
	n := new(big.Int)
	for _, i := range indices {
		n.SetBit(n, i, 1)
	}
	h := strings.ToUpper(n.Text(16))
	if len(h)%2 == 1 {
		h = "0" + h
	}
	return "0x" + h
}

// ChangeEvent is a stored change event as tests and the control API see it.
type ChangeEvent struct {
	ReplayID        []byte         `json:"replayId"`
	Entity          string         `json:"entityName"`
	ChangeType      string         `json:"changeType"`
	RecordIDs       []string       `json:"recordIds"`
	ChangeOrigin    string         `json:"changeOrigin"`
	TransactionKey  string         `json:"transactionKey"`
	SequenceNumber  int            `json:"sequenceNumber"`
	CommitTimestamp int64          `json:"commitTimestamp"`
	Fields          map[string]any `json:"fields"`
	SchemaID        string         `json:"schemaId"`
}

// ChangeEvents returns the retained change events, oldest first.
func (o *Org) ChangeEvents() []ChangeEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	o.purgeCDCLocked(msOf(o.now()))
	out := make([]ChangeEvent, 0, len(o.cdc.events))
	for i := range o.cdc.events {
		e := &o.cdc.events[i]
		fs := map[string]any{}
		for _, f := range e.fields {
			fs[f.name] = f.value
		}
		out = append(out, ChangeEvent{ReplayID: o.replayID(e.seq), Entity: e.entity, ChangeType: e.kind,
			RecordIDs: append([]string{}, e.recordIDs...), ChangeOrigin: e.origin, TransactionKey: e.txKey,
			SequenceNumber: e.seqNumber, CommitTimestamp: e.at, Fields: fs, SchemaID: e.schemaID})
	}
	return out
}

// PublishGap adds a gap event (GAP_CREATE, GAP_UPDATE, GAP_DELETE or
// GAP_UNDELETE) for the records, as Salesforce does when it cannot send
// the change itself (§9.8): header only, no field values. ids may hold a
// wildcard such as "003*".
func (o *Org) PublishGap(entity, changeType string, ids []string) error {
	switch changeType {
	case ChangeGapCreate, ChangeGapUpdate, ChangeGapDelete, ChangeGapUndelete:
	default:
		return fmt.Errorf("gap event: change type %q is not a GAP_ type", changeType)
	}
	if _, ok := typeByName(entity); !ok {
		return fmt.Errorf("gap event: entity %q is neither Contact nor Lead", entity)
	}
	if len(ids) == 0 {
		return fmt.Errorf("gap event: no record ids")
	}
	var chs []cdcChange
	for _, id := range ids {
		chs = append(chs, cdcChange{entity: canonicalEntity(entity), kind: changeType, id: id})
	}
	o.commitCDC("", chs)
	return nil
}

// PublishOverflow adds a GAP_OVERFLOW event for the entity: entityName set,
// no record ids (§9.8).
func (o *Org) PublishOverflow(entity string) error {
	if _, ok := typeByName(entity); !ok {
		return fmt.Errorf("overflow event: entity %q is neither Contact nor Lead", entity)
	}
	o.commitCDC("", []cdcChange{{entity: canonicalEntity(entity), kind: ChangeGapOverflow}})
	return nil
}

// PurgeChangeEvents drops every retained change event, as if the retention
// window had passed: replay ids from before now fail as expired.
func (o *Org) PurgeChangeEvents() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	if n := len(o.cdc.events); n > 0 {
		o.cdc.purgedThrough = o.cdc.events[n-1].seq
		o.cdc.events = nil
		o.cdc.size = 0
	}
	o.cdc.broadcast()
}

func canonicalEntity(name string) string {
	if t, ok := typeByName(name); ok {
		return t.String()
	}
	return name
}

// cdcOrigin is changeOrigin of an API write (§9.6): api is rest or bulkapi.
func (o *Org) cdcOrigin(api, version, client string) string {
	s := "com/salesforce/api/" + api + "/" + version
	if client == "" {
		return s
	}
	o.mu.Lock()
	slash := o.cfg.Behavior.CDCOriginTrailingSlash
	o.mu.Unlock()
	s += ";client=" + client
	if slash {
		s += "/"
	}
	return s
}

// now-relative helpers for the allocation (rolling 24 h).
const day = 24 * time.Hour

// conversionChanges is Lead conversion as one transaction (§9.8), in
// sequenceNumber order: Account CREATE, Contact CREATE, then the Lead UPDATE
// carrying Status, IsConverted, ConvertedDate, ConvertedAccountId and
// ConvertedContactId, and no LastModifiedDate. No Opportunity is created,
// so ConvertedOpportunityId stays unset. [inference] The Account is a fresh
// id of prefix 001 and Status the default converted value.
func conversionChanges(contact *rec, leadID, custom string, now int64) []cdcChange {
	account := makeID(prefixAccount, uint64(now)%1_000_000_000).String()
	day := now - now%int64(day/time.Millisecond)
	return []cdcChange{
		{entity: "Account", kind: ChangeCreate, id: account, fields: []cdcField{{"LastModifiedDate", now}}},
		createChange(contact, custom),
		{entity: "Lead", kind: ChangeUpdate, id: leadID, fields: []cdcField{
			{"Status", "Closed - Converted"}, {"IsConverted", true}, {"ConvertedDate", day},
			{"ConvertedAccountId", account}, {"ConvertedContactId", contact.id.String()},
		}},
	}
}
