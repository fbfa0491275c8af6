// Package sfid validates and normalises Salesforce record ids.
//
// A 15-character id is case-sensitive; the 18-character form appends a
// 3-character checksum that makes it unique case-insensitively. Ids are
// normalised to 18 characters before they are compared or used as map keys.
package sfid

import (
	"errors"
	"fmt"
)

// Key prefixes of the objects optout-sync writes.
const (
	PrefixContact = "003"
	PrefixLead    = "00Q"
)

// Object types as the Salesforce API names them.
const (
	Contact = "Contact"
	Lead    = "Lead"
)

const checksumAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

// ErrLength, ErrCharacter and ErrChecksum say why an id is malformed.
var (
	ErrLength    = errors.New("must be 15 or 18 characters")
	ErrCharacter = errors.New("must contain only letters and digits")
	ErrChecksum  = errors.New("checksum (last 3 characters) does not match the first 15")
)

// Normalize returns the 18-character form of a 15- or 18-character id,
// verifying the checksum of an 18-character one.
func Normalize(id string) (string, error) {
	if len(id) != 15 && len(id) != 18 {
		return "", fmt.Errorf("salesforce id %q: %w (got %d)", id, ErrLength, len(id))
	}
	for i := 0; i < len(id); i++ {
		if !isAlnum(id[i]) {
			return "", fmt.Errorf("salesforce id %q: %w", id, ErrCharacter)
		}
	}
	full := id[:15] + checksum(id[:15])
	if len(id) == 18 && !equalFoldASCII(id[15:], full[15:]) {
		return "", fmt.Errorf("salesforce id %q: %w (want %s)", id, ErrChecksum, full[15:])
	}
	return full, nil
}

// ObjectType returns Contact or Lead from the id's key prefix, or "" for any
// other object.
func ObjectType(id string) string {
	if len(id) < 3 {
		return ""
	}
	switch id[:3] {
	case PrefixContact:
		return Contact
	case PrefixLead:
		return Lead
	}
	return ""
}

// checksum computes the 3-character suffix of a 15-character id: one
// character per block of 5, with bit i set when character i is upper case.
func checksum(id15 string) string {
	var out [3]byte
	for block := 0; block < 3; block++ {
		v := 0
		for i := 0; i < 5; i++ {
			c := id15[block*5+i]
			if c >= 'A' && c <= 'Z' {
				v |= 1 << i
			}
		}
		out[block] = checksumAlphabet[v]
	}
	return string(out[:])
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'a' && x <= 'z' {
			x -= 'a' - 'A'
		}
		if y >= 'a' && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
