package sandbox

import "strings"

// Key prefixes of the objects the sandbox emulates (spec §8).
const (
	prefixContact = "003"
	prefixLead    = "00Q"
	prefixUser    = "005"
	prefixOrg     = "00D"
	prefixJob     = "750"
	prefixAccount = "001"
	prefixLocator = "01g"
)

const checksumAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

// base62 digits in ASCII order, so that generated IDs sort like their counters.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// sfid is an 18-char Salesforce ID stored inline, so 2M map keys need no
// separate string allocations.
type sfid [18]byte

func (id sfid) String() string { return string(id[:]) }

// Prefix is the 3-char key prefix.
func (id sfid) Prefix() string { return string(id[:3]) }

// checksumSuffix computes the 3 chars that make a 15-char ID case-insensitively unique.
func checksumSuffix(id15 string) string {
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

// To18 converts a 15-char ID to 18 chars and validates an 18-char one.
// Valid IDs are alphanumeric; an 18-char ID's suffix must match its checksum
// (compared case-insensitively, as Salesforce does).
func To18(id string) (string, bool) {
	if len(id) != 15 && len(id) != 18 {
		return "", false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return "", false
		}
	}
	sum := checksumSuffix(id[:15])
	if len(id) == 18 && !strings.EqualFold(id[15:], sum) {
		return "", false
	}
	return id[:15] + sum, true
}

// parseID normalises a 15/18-char ID into its inline form.
func parseID(id string) (sfid, bool) {
	var out sfid
	s, ok := To18(id)
	if !ok {
		return out, false
	}
	copy(out[:], s)
	return out, true
}

// makeID builds an 18-char ID: prefix + 2-char pod + "0" + 9 base62 digits of n + checksum.
func makeID(prefix string, n uint64) sfid {
	var b [15]byte
	copy(b[:3], prefix)
	b[3], b[4], b[5] = 'R', 'O', '0'
	for i := 14; i >= 6; i-- {
		b[i] = base62[n%62]
		n /= 62
	}
	var out sfid
	copy(out[:15], b[:])
	copy(out[15:], checksumSuffix(string(b[:])))
	return out
}
