// Package suppression answers "may I email this address?" for a tenant:
// GET /v1/tenants/{tenant}/suppression?email=… (or salesConnectId=, or
// salesforceId=), from an index of the ledger held in memory.
//
// Why in memory, built from the ledger's own stream (ledger.Follower), and
// not a second KV bucket kept by the ledger writer:
//   - latency: an answer is a map lookup, not two or three NATS round trips,
//     so p99 stays in the microseconds at 1,000 requests a second;
//   - it cannot diverge from the ledger: it is derived from the stream every
//     entry change is stored in, as the audit trail is, with no second write
//     on ingest's hot path that a crash could separate from the first, and
//     no migration to build an index for the entries already stored;
//   - the price is memory (a compact record per person, under 200 bytes
//     with its lookups; bench/suppression.md measures it at 1,000,000
//     entries) and a start-up read of the whole ledger, during which the
//     replica is not ready (services/admin/ledgerfeed).
//
// An index lags the ledger by however long a change takes to arrive. It
// says how far it is current (Index.AsOf: every change stored before then
// is in it), and the API never answers "allowed" from an index older than
// its limit: it answers 503 "unknown" instead. A suppressed person found in
// a lagging index is still answered "suppressed", the safe direction.
package suppression

import (
	"encoding/base64"
	"encoding/hex"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// The layout is for a million persons: a record holds no pointer (so the
// collector does not scan the records), strings that repeat (object type,
// source, reason, state) are numbers into one table, a Salesforce id is a
// fixed array, and the lookups by email and by Salesforce id are maps of
// 8-byte hashes to a record number, persons sharing one chained through the
// records themselves instead of a slice per address. The ledger key (for
// the Sales Connect id) is the one string each person costs.

// ref numbers a record; 0 is none.
type ref = uint32

// Name fields of a record, numbers into Index.names.
const (
	fObjectType = iota
	fSource
	fReason
	fState
	nFields
)

// overflowName marks a name kept in Index.overflow: the table is full
// (distinct free-text reasons beyond maxNames).
const (
	maxNames     = 1<<16 - 2
	overflowName = 1<<16 - 1
)

// record is what the index keeps of one person: enough to answer, no more.
type record struct {
	since     int64  // DecidedAt, Unix nanoseconds (0: none)
	emailHash uint64 // 0: none
	nextEmail ref    // the tenant's next person of the same address
	nextSF    ref    // the tenant's next person whose Salesforce id hashes alike
	sf        sfID
	names     [nFields]uint16
	optedOut  bool
	converted bool // the person has ConvertedFrom ids (tenantIndex.converted)
}

// sfID is an 18-character Salesforce id; all zero: none.
type sfID [18]byte

func toSFID(s string) (id sfID, ok bool) {
	if len(s) != len(id) {
		return id, false
	}
	copy(id[:], s)
	return id, true
}

func (id sfID) String() string {
	if id == (sfID{}) {
		return ""
	}
	return string(id[:])
}

var sfSeed = maphash.MakeSeed()

func (id sfID) hash() uint64 { return maphash.Bytes(sfSeed, id[:]) }

// chunkBits sizes the record chunks: growing the index appends a chunk,
// never copies (a doubling slice of a million records would hold up to
// twice their size, and copy it, during the start-up read).
const chunkBits = 12

// tenantIndex is one tenant's persons: under their ledger key less the
// tenant prefix, and the two lookups that are not the key.
type tenantIndex struct {
	byKey   map[string]ref
	byEmail map[uint64]ref // the first person of the address; record.nextEmail the others
	bySF    map[uint64]ref // by sfID.hash; record.nextSF the others
	// The rare persons with converted-from ids (a Lead converted into a
	// Contact): the ids, and who they name.
	converted   map[ref][]string
	byConverted map[string][]ref
}

// Index is the in-memory index of every tenant's ledger entries.
type Index struct {
	mu       sync.RWMutex
	tenants  map[string]*tenantIndex
	recs     [][]record // chunks of 1<<chunkBits
	keys     [][]string // each record's ledger key less the tenant
	free     []ref
	next     ref // the next never-used record number
	names    []string
	nameOf   map[string]uint16
	overflow map[overflowKey]string
	// asOf is when the index was last known current (Unix nanoseconds; 0:
	// never, the initial read is not done).
	asOf atomic.Int64
	size atomic.Int64
}

type overflowKey struct {
	r     ref
	field uint8
}

// NewIndex returns an empty index; Apply fills it.
func NewIndex() *Index {
	return &Index{tenants: map[string]*tenantIndex{}, names: []string{""}, nameOf: map[string]uint16{"": 0},
		overflow: map[overflowKey]string{}, next: 1}
}

// AsOf is the time before which every ledger change is in the index (zero
// until the initial read is done).
func (x *Index) AsOf() time.Time {
	n := x.asOf.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// MarkCurrent records that the index held every change stored before at.
func (x *Index) MarkCurrent(at time.Time) {
	n := at.UnixNano()
	for {
		old := x.asOf.Load()
		if n <= old || x.asOf.CompareAndSwap(old, n) {
			return
		}
	}
}

// Size is the number of persons indexed.
func (x *Index) Size() int { return int(x.size.Load()) }

// emailHashBits turns the ledger's "email:<12 hex digits>" (logx.HashEmail)
// into a map key of 8 bytes instead of a 34-byte string.
func emailHashBits(h string) uint64 {
	hexPart, ok := strings.CutPrefix(h, "email:")
	if !ok || len(hexPart) != 12 {
		return 0
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil {
		return 0
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v | 1<<63 // 48 bits of hash, and never 0, which means "none"
}

func (x *Index) rec(r ref) *record { return &x.recs[r>>chunkBits][r&(1<<chunkBits-1)] }
func (x *Index) key(r ref) string  { return x.keys[r>>chunkBits][r&(1<<chunkBits-1)] }

func (x *Index) alloc(key string) ref {
	var r ref
	if n := len(x.free); n > 0 {
		r, x.free = x.free[n-1], x.free[:n-1]
	} else {
		r = x.next
		x.next++
		if int(r>>chunkBits) == len(x.recs) {
			x.recs = append(x.recs, make([]record, 1<<chunkBits))
			x.keys = append(x.keys, make([]string, 1<<chunkBits))
		}
	}
	x.keys[r>>chunkBits][r&(1<<chunkBits-1)] = key
	return r
}

func (x *Index) release(r ref) {
	*x.rec(r) = record{}
	x.keys[r>>chunkBits][r&(1<<chunkBits-1)] = ""
	for f := range uint8(nFields) {
		delete(x.overflow, overflowKey{r, f})
	}
	x.free = append(x.free, r)
}

// setName stores s as field f of record r: a number into the table, or,
// once the table is full (free-text reasons), the string beside it.
func (x *Index) setName(r ref, f uint8, s string) {
	rec := x.rec(r)
	delete(x.overflow, overflowKey{r, f})
	if n, ok := x.nameOf[s]; ok {
		rec.names[f] = n
		return
	}
	if len(x.names) < maxNames {
		n := uint16(len(x.names))
		x.names = append(x.names, s)
		x.nameOf[s] = n
		rec.names[f] = n
		return
	}
	rec.names[f] = overflowName
	x.overflow[overflowKey{r, f}] = s
}

func (x *Index) name(r ref, rec *record, f uint8) string {
	if n := rec.names[f]; n != overflowName {
		return x.names[n]
	}
	return x.overflow[overflowKey{r, f}]
}

// Apply folds one ledger change into the index.
func (x *Index) Apply(c ledger.Change) {
	tenant, rest, ok := strings.Cut(c.Key, ".")
	if !ok {
		return
	}
	e := c.Entry
	gone := c.Deleted || e.MergedInto != "" // or the person now lives under MergedInto
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.tenants[tenant]
	if t == nil {
		if gone {
			return
		}
		t = &tenantIndex{byKey: map[string]ref{}, byEmail: map[uint64]ref{}, bySF: map[uint64]ref{},
			converted: map[ref][]string{}, byConverted: map[string][]ref{}}
		x.tenants[tenant] = t
	}
	r, held := t.byKey[rest]
	if held {
		x.unlink(t, r)
		if gone {
			delete(t.byKey, rest)
			x.release(r)
			x.size.Add(-1)
			return
		}
	} else {
		if gone {
			return
		}
		r = x.alloc(rest)
		t.byKey[x.key(r)] = r
		x.size.Add(1)
	}
	rec := x.rec(r)
	*rec = record{emailHash: emailHashBits(e.EmailHash), optedOut: e.OptedOut}
	rec.sf, _ = toSFID(e.SalesforceID)
	if !e.DecidedAt.IsZero() {
		rec.since = e.DecidedAt.UnixNano()
	}
	x.setName(r, fObjectType, e.ObjectType)
	x.setName(r, fSource, e.Source)
	x.setName(r, fState, string(e.State))
	reason := ""
	if e.LastEvent != nil && e.LastEvent.ID == e.DecidedBy {
		reason = e.LastEvent.Reason
	}
	x.setName(r, fReason, reason)
	if rec.emailHash != 0 {
		rec.nextEmail = t.byEmail[rec.emailHash]
		t.byEmail[rec.emailHash] = r
	}
	if rec.sf != (sfID{}) {
		h := rec.sf.hash()
		rec.nextSF = t.bySF[h]
		t.bySF[h] = r
	}
	if len(e.ConvertedFrom) > 0 {
		rec.converted = true
		t.converted[r] = slices.Clone(e.ConvertedFrom)
		for _, id := range e.ConvertedFrom {
			t.byConverted[id] = append(t.byConverted[id], r)
		}
	}
}

// unlink takes record r out of its tenant's email and Salesforce id
// chains and its converted-from ids.
func (x *Index) unlink(t *tenantIndex, r ref) {
	rec := x.rec(r)
	if rec.emailHash != 0 {
		x.unchain(t.byEmail, rec.emailHash, r, func(q *record) *ref { return &q.nextEmail })
	}
	if rec.sf != (sfID{}) {
		x.unchain(t.bySF, rec.sf.hash(), r, func(q *record) *ref { return &q.nextSF })
	}
	if rec.converted {
		for _, id := range t.converted[r] {
			if rs := slices.DeleteFunc(t.byConverted[id], func(q ref) bool { return q == r }); len(rs) == 0 {
				delete(t.byConverted, id)
			} else {
				t.byConverted[id] = rs
			}
		}
		delete(t.converted, r)
	}
}

// unchain removes r from the chain that starts at head[h] and continues
// through next.
func (x *Index) unchain(head map[uint64]ref, h uint64, r ref, next func(*record) *ref) {
	first := head[h]
	if first == r {
		if n := *next(x.rec(r)); n == 0 {
			delete(head, h)
		} else {
			head[h] = n
		}
		return
	}
	for q := first; q != 0; {
		p := next(x.rec(q))
		if *p == r {
			*p = *next(x.rec(r))
			return
		}
		q = *p
	}
}

// Record is one person the lookup matched, as the API shows it.
type Record struct {
	SalesConnectID string    `json:"salesConnectId,omitempty"`
	SalesforceID   string    `json:"salesforceId,omitempty"`
	ObjectType     string    `json:"objectType,omitempty"`
	Suppressed     bool      `json:"suppressed"`
	Since          time.Time `json:"since,omitzero"`
	Source         string    `json:"source,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	SyncState      string    `json:"syncState,omitempty"`
}

// Lookup kinds.
const (
	ByEmail          = "email"
	BySalesConnectID = "salesConnectId"
	BySalesforceID   = "salesforceId"
)

// Lookup returns the persons of tenant that value (an email hash as
// logx.HashEmail makes it, a Sales Connect id or an 18-character
// Salesforce id) names, by kind.
func (x *Index) Lookup(tenant, kind, value string) []Record {
	x.mu.RLock()
	defer x.mu.RUnlock()
	t := x.tenants[tenant]
	if t == nil {
		return nil
	}
	var found []ref
	switch kind {
	case ByEmail:
		if h := emailHashBits(value); h != 0 {
			for r := t.byEmail[h]; r != 0; r = x.rec(r).nextEmail {
				found = append(found, r)
			}
		}
	case BySalesConnectID:
		if r, ok := t.byKey[strings.TrimPrefix(optout.Key(tenant, value, ""), tenant+".")]; ok {
			found = append(found, r)
		}
	case BySalesforceID:
		// An entry under the id itself that no longer names it (it was
		// relinked) is not this record's: only the ids entries name count.
		if id, ok := toSFID(value); ok {
			for r := t.bySF[id.hash()]; r != 0; r = x.rec(r).nextSF {
				if x.rec(r).sf == id {
					found = append(found, r)
				}
			}
		}
		for _, r := range t.byConverted[value] {
			if !slices.Contains(found, r) {
				found = append(found, r)
			}
		}
	}
	out := make([]Record, 0, len(found))
	for _, r := range found {
		rec := x.rec(r)
		out = append(out, x.record(r, rec))
	}
	return out
}

// record is what the API shows of record r.
func (x *Index) record(r ref, rec *record) Record {
	out := Record{SalesforceID: rec.sf.String(), ObjectType: x.name(r, rec, fObjectType), Suppressed: rec.optedOut,
		Source: x.name(r, rec, fSource), SyncState: x.name(r, rec, fState)}
	if sc, ok := strings.CutPrefix(x.key(r), "sc."); ok {
		if b, err := base64.RawURLEncoding.DecodeString(sc); err == nil {
			out.SalesConnectID = string(b)
		}
	}
	if rec.since != 0 {
		// Suppressed: since the opt-out. Not: since the resubscribe, the
		// wish now in force.
		out.Since = time.Unix(0, rec.since).UTC()
	}
	if rec.optedOut {
		out.Reason = x.name(r, rec, fReason)
	}
	return out
}
