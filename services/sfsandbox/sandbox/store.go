package sandbox

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// objType indexes the per-type record slices.
type objType uint8

const (
	typeContact objType = iota
	typeLead
	numTypes
)

var typeNames = [numTypes]string{"Contact", "Lead"}
var typePrefixes = [numTypes]string{prefixContact, prefixLead}

func (t objType) String() string { return typeNames[t] }

// typeByName resolves an sObject name case-insensitively.
func typeByName(name string) (objType, bool) {
	for t := objType(0); t < numTypes; t++ {
		if equalFold(typeNames[t], name) {
			return t, true
		}
	}
	return 0, false
}

func typeByPrefix(p string) (objType, bool) {
	for t := objType(0); t < numTypes; t++ {
		if typePrefixes[t] == p {
			return t, true
		}
	}
	return 0, false
}

const (
	flagOptedOut uint8 = 1 << iota
	flagCustom
	flagDeleted
	flagConverted
)

// rec is the compact stored form of a record (64 bytes plus the email), so a
// 2,000,000-record org stays in a few hundred MB.
type rec struct {
	id        sfid
	flags     uint8
	typ       objType
	email     string
	lastMod   int64 // Unix ms
	modstamp  int64 // Unix ms
	converted *sfid // Leads: the converted Contact
}

func (r *rec) has(f uint8) bool { return r.flags&f != 0 }

func (r *rec) set(f uint8, on bool) {
	if on {
		r.flags |= f
	} else {
		r.flags &^= f
	}
}

// ref locates a record: type in the top bit, index into that type's slice below.
type ref uint32

const refLeadBit = 1 << 31

func makeRef(t objType, idx int) ref {
	if t == typeLead {
		return ref(uint32(idx) | refLeadBit)
	}
	return ref(uint32(idx))
}

func (r ref) typ() objType {
	if r&refLeadBit != 0 {
		return typeLead
	}
	return typeContact
}

func (r ref) idx() int { return int(r &^ refLeadBit) }

// store holds one org's records. Records are never removed (deletes go to
// the recycle bin), so indices stay valid for cursors and bulk jobs.
type store struct {
	mu   sync.RWMutex
	byID map[sfid]ref
	recs [numTypes][]rec
	// sorted tells whether recs[t] is in ascending ID order, letting
	// ORDER BY Id skip the sort.
	sorted [numTypes]bool
	nextN  uint64
}

func newStore() *store {
	return &store{byID: make(map[sfid]ref), sorted: [numTypes]bool{true, true}}
}

// lookup returns the stored record; the caller holds mu.
func (s *store) lookup(id sfid) (*rec, bool) {
	rf, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return &s.recs[rf.typ()][rf.idx()], true
}

// newID returns an unused ID of type t; the caller holds mu for writing.
func (s *store) newID(t objType) sfid {
	for {
		s.nextN++
		id := makeID(typePrefixes[t], s.nextN)
		if _, taken := s.byID[id]; !taken {
			return id
		}
	}
}

// upsert inserts or replaces; the caller holds mu for writing.
func (s *store) upsert(r rec) *rec {
	if rf, ok := s.byID[r.id]; ok && rf.typ() == r.typ {
		p := &s.recs[r.typ][rf.idx()]
		*p = r
		return p
	}
	list := s.recs[r.typ]
	if n := len(list); n > 0 && string(list[n-1].id[:]) >= string(r.id[:]) {
		s.sorted[r.typ] = false
	}
	s.recs[r.typ] = append(list, r)
	idx := len(s.recs[r.typ]) - 1
	s.byID[r.id] = makeRef(r.typ, idx)
	return &s.recs[r.typ][idx]
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// toRecord converts to the exported form.
func (r *rec) toRecord() Record {
	out := Record{
		ID:                 r.id.String(),
		Type:               r.typ.String(),
		Email:              r.email,
		HasOptedOutOfEmail: r.has(flagOptedOut),
		CustomOptOut:       r.has(flagCustom),
		IsDeleted:          r.has(flagDeleted),
		IsConverted:        r.has(flagConverted),
		LastModifiedDate:   timeOf(r.lastMod),
		SystemModstamp:     timeOf(r.modstamp),
	}
	if r.converted != nil {
		out.ConvertedContactID = r.converted.String()
	}
	return out
}

// fromRecord validates and converts an exported record; the ID must be set.
func fromRecord(in Record) (rec, error) {
	id, ok := parseID(in.ID)
	if !ok {
		return rec{}, fmt.Errorf("invalid record id %q", in.ID)
	}
	t, ok := typeByPrefix(id.Prefix())
	if !ok {
		return rec{}, fmt.Errorf("id %s: prefix %s is neither Contact (003) nor Lead (00Q)", in.ID, id.Prefix())
	}
	if in.Type != "" && !equalFold(in.Type, t.String()) {
		return rec{}, fmt.Errorf("id %s is a %s, not a %s", in.ID, t, in.Type)
	}
	r := rec{id: id, typ: t, email: in.Email, lastMod: msOf(in.LastModifiedDate), modstamp: msOf(in.SystemModstamp)}
	r.set(flagOptedOut, in.HasOptedOutOfEmail)
	r.set(flagCustom, in.CustomOptOut)
	r.set(flagDeleted, in.IsDeleted)
	if t == typeLead {
		r.set(flagConverted, in.IsConverted)
		if in.ConvertedContactID != "" {
			cid, ok := parseID(in.ConvertedContactID)
			if !ok {
				return rec{}, fmt.Errorf("invalid ConvertedContactID %q", in.ConvertedContactID)
			}
			r.converted = &cid
		}
	}
	return r, nil
}

// snapshot returns every record sorted by ID.
func (s *store) snapshot() []Record {
	s.mu.RLock()
	out := make([]Record, 0, len(s.byID))
	for t := range s.recs {
		for i := range s.recs[t] {
			out = append(out, s.recs[t][i].toRecord())
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
