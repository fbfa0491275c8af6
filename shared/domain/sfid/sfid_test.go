package sfid

import (
	"errors"
	"testing"
)

func TestNormalizeSpecExamples(t *testing.T) {
	// The spec's checked examples (salesforce-api.md §8).
	for in, want := range map[string]string{
		"001D000000IRFma":    "001D000000IRFmaIAH",
		"003RO0000035WQg":    "003RO0000035WQgYAM",
		"00558000001N0Ke":    "00558000001N0KeAAK",
		"003RO0000035WQgYAM": "003RO0000035WQgYAM",
		"003RO0000035WQgyam": "003RO0000035WQgYAM", // the suffix is case-insensitive
	} {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestNormalizeErrors(t *testing.T) {
	for in, want := range map[string]error{
		"003RO0000035WQ":     ErrLength,
		"003RO0000035WQg-AM": ErrCharacter,
		"003RO0000035WQgAAA": ErrChecksum,
	} {
		if _, err := Normalize(in); !errors.Is(err, want) {
			t.Errorf("Normalize(%q) error = %v; want %v", in, err, want)
		}
	}
}

func TestObjectType(t *testing.T) {
	for in, want := range map[string]string{"003RO0000035WQg": Contact, "00QRO0000035WQg": Lead, "001D000000IRFma": "", "": ""} {
		if got := ObjectType(in); got != want {
			t.Errorf("ObjectType(%q) = %q; want %q", in, got, want)
		}
	}
}
