package idset_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomID(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString([]string{"003", "00Q"}[r.IntN(2)])
	for range 12 {
		b.WriteByte(alphabet[r.IntN(len(alphabet))])
	}
	id, _ := sfid.Normalize(b.String())
	return id
}

func TestPackRoundTripsAndSortsLikeTheIDs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var ids []string
	for range 5000 {
		ids = append(ids, randomID(r))
	}
	ids = append(ids, "003RO0000035WQgYAM", "00Q000000000000EAA", "00Qzzzzzzzzzzzz")
	var packed []idset.ID
	for _, id := range ids {
		k, err := idset.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := sfid.Normalize(id)
		if k.String() != want {
			t.Fatalf("%s packs back to %s", want, k.String())
		}
		packed = append(packed, k)
	}
	// The 15- and 18-character forms pack alike.
	if idset.MustParse("003RO0000035WQg") != idset.MustParse("003RO0000035WQgYAM") {
		t.Fatal("15- and 18-character forms differ")
	}
	// Case matters: these are different records.
	if idset.MustParse("003RO0000035WQg") == idset.MustParse("003RO0000035WQG") {
		t.Fatal("ids differing only in case packed alike")
	}
	slices.SortFunc(packed, idset.Compare)
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(a[:15], b[:15]) })
	for i := range ids {
		if packed[i].String()[:15] != ids[i][:15] {
			t.Fatalf("order differs at %d: %s vs %s", i, packed[i], ids[i])
		}
	}
	if _, err := idset.Parse("003RO0000035WQgXXX"); err == nil {
		t.Fatal("bad checksum accepted")
	}
	if idset.MustParse("00Q000000000000EAA").Type() != "Lead" {
		t.Fatal("type")
	}
}

func TestSetFindsMarksAndDedupes(t *testing.T) {
	var b idset.Builder
	a, c := idset.MustParse("003000000000001AAA"), idset.MustParse("003000000000003AAA")
	b.Add(c, 30)
	b.Add(a, 10)
	b.Add(a, 20) // the newest instant wins
	s := b.Build()
	if s.Len() != 2 {
		t.Fatalf("len %d", s.Len())
	}
	i, ok := s.Find(a)
	if id, at := s.At(i); !ok || id != a || at != 20 {
		t.Fatalf("find a: %d %v %d", i, ok, at)
	}
	if _, ok := s.Find(idset.MustParse("003000000000002AAA")); ok {
		t.Fatal("found an absent id")
	}
	s.Mark(i)
	var un []int
	s.Unmarked(func(i int) { un = append(un, i) })
	if len(un) != 1 || !s.Marked(i) {
		t.Fatalf("unmarked %v", un)
	}
}
