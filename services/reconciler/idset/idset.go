// Package idset holds the opted-out sets of a reconcile in as little memory
// as an org of millions allows: a Salesforce id packed into 12 bytes (15
// case-sensitive base-62 characters at 6 bits each; the 3-character suffix
// of the 18-character form is a checksum and is recomputed), and a sorted
// slice of ids with their SystemModstamp instead of a map.
package idset

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

// ID is a packed Salesforce id. Packed ids sort like their 15-character
// forms, and two ids are equal exactly when their 18-character forms are.
type ID [12]byte

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var value = func() (v [256]int8) {
	for i := range v {
		v[i] = -1
	}
	for i := range len(alphabet) {
		v[alphabet[i]] = int8(i)
	}
	return v
}()

// Parse packs a 15- or 18-character id (an 18-character one must have a
// correct checksum).
func Parse(id string) (ID, error) {
	id18, err := sfid.Normalize(id)
	if err != nil {
		return ID{}, err
	}
	var hi, lo uint64
	for i := 0; i < 15; i++ {
		v := uint64(value[id18[i]])
		if i < 10 {
			hi = hi<<6 | v
		} else {
			lo = lo<<6 | v
		}
	}
	var out ID
	binary.BigEndian.PutUint64(out[:8], hi)
	binary.BigEndian.PutUint32(out[8:], uint32(lo))
	return out, nil
}

// MustParse is Parse for ids known to be valid (tests, constants).
func MustParse(id string) ID {
	k, err := Parse(id)
	if err != nil {
		panic(fmt.Sprintf("idset: %v", err))
	}
	return k
}

// String returns the 18-character id.
func (k ID) String() string {
	var b [15]byte
	hi := binary.BigEndian.Uint64(k[:8])
	lo := uint64(binary.BigEndian.Uint32(k[8:]))
	for i := 14; i >= 10; i-- {
		b[i] = alphabet[lo&63]
		lo >>= 6
	}
	for i := 9; i >= 0; i-- {
		b[i] = alphabet[hi&63]
		hi >>= 6
	}
	id18, err := sfid.Normalize(string(b[:]))
	if err != nil {
		return string(b[:]) // not reachable for a packed id
	}
	return id18
}

// Type is Contact or Lead from the key prefix ("" for other objects).
func (k ID) Type() string {
	s := k.String()
	return sfid.ObjectType(s)
}

// Compare orders ids like their 15-character forms.
func Compare(a, b ID) int { return bytes.Compare(a[:], b[:]) }

type member struct {
	id ID
	at int64 // Unix milliseconds
}

// Set is a sorted set of ids, each with an instant (the record's
// SystemModstamp), and one mark bit per member. 24 bytes a member plus one
// bit: 1,000,000 opted-out records take about 24 MB.
type Set struct {
	m     []member
	marks []uint64
}

// Builder collects ids in any order; Build sorts them.
type Builder struct{ m []member }

// Grow reserves room for n more ids.
func (b *Builder) Grow(n int) { b.m = slices.Grow(b.m, n) }

// Add adds an id with its instant.
func (b *Builder) Add(id ID, atMillis int64) { b.m = append(b.m, member{id, atMillis}) }

// Each calls fn with every id added so far, in the order added.
func (b *Builder) Each(fn func(id ID, atMillis int64)) {
	for _, m := range b.m {
		fn(m.id, m.at)
	}
}

// Len is the number of ids added so far.
func (b *Builder) Len() int { return len(b.m) }

// Build sorts and deduplicates (keeping the newest instant) and returns the
// set; the Builder is empty afterwards.
func (b *Builder) Build() *Set {
	m := b.m
	b.m = nil
	slices.SortFunc(m, func(x, y member) int {
		if c := Compare(x.id, y.id); c != 0 {
			return c
		}
		return -cmpInt(x.at, y.at) // newest first, so Compact keeps it
	})
	m = slices.CompactFunc(m, func(x, y member) bool { return x.id == y.id })
	return &Set{m: slices.Clip(m), marks: make([]uint64, (len(m)+63)/64)}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Len is the number of ids.
func (s *Set) Len() int { return len(s.m) }

// Find returns the index of id, and whether it is in the set.
func (s *Set) Find(id ID) (int, bool) {
	return slices.BinarySearchFunc(s.m, id, func(m member, id ID) int { return Compare(m.id, id) })
}

// At returns the id and instant at index i.
func (s *Set) At(i int) (ID, int64) { return s.m[i].id, s.m[i].at }

// Mark sets the mark of index i.
func (s *Set) Mark(i int) { s.marks[i/64] |= 1 << (i % 64) }

// Marked reports the mark of index i.
func (s *Set) Marked(i int) bool { return s.marks[i/64]&(1<<(i%64)) != 0 }

// Unmarked calls fn with every unmarked index, in id order.
func (s *Set) Unmarked(fn func(i int)) {
	for i := range s.m {
		if !s.Marked(i) {
			fn(i)
		}
	}
}

// Bytes estimates the memory the set holds.
func (s *Set) Bytes() int { return cap(s.m)*24 + len(s.marks)*8 }
