package pubsub

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
)

// Fields the subscriber reads from change events (spec §9.6, §9.8); the
// tenant's sales opt-out field is added per subscription (Fields option).
const (
	FieldEmailOptOut        = "HasOptedOutOfEmail"
	FieldEmail              = "Email"
	FieldIsConverted        = "IsConverted"
	FieldConvertedContactID = "ConvertedContactId"
)

// DefaultFields are the record fields an Event keeps when the subscription
// names none.
var DefaultFields = []string{FieldEmailOptOut, FieldEmail, FieldIsConverted, FieldConvertedContactID}

// Change types (spec §9.6). Others (SNAPSHOT, future symbols) pass through
// as their symbol.
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

// Schema is a change event's writer schema: field 0 is ChangeEventHeader,
// then the entity's fields, compound ones (Name, MailingAddress) as records.
type Schema struct {
	ID     string
	JSON   string
	avro   avro.Schema
	fields []string   // top-level names in schema order
	child  [][]string // child names of compound fields (nil for scalars)
}

// Fields are the top-level field names in schema order.
func (s *Schema) Fields() []string { return s.fields }

func parseSchema(id, js string) (*Schema, error) {
	// A cache per schema: every version of ContactChangeEvent has the same
	// full name, and the default cache would hand out the first one parsed.
	sc, err := avro.ParseWithCache(js, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	rs, ok := sc.(*avro.RecordSchema)
	if !ok || len(rs.Fields()) == 0 || rs.Fields()[0].Name() != "ChangeEventHeader" {
		return nil, errors.New("not a record whose field 0 is ChangeEventHeader")
	}
	s := &Schema{ID: id, JSON: js, avro: sc}
	for _, f := range rs.Fields() {
		s.fields = append(s.fields, f.Name())
		var kids []string
		if r := recordOf(f.Type()); r != nil {
			for _, k := range r.Fields() {
				kids = append(kids, k.Name())
			}
		}
		s.child = append(s.child, kids)
	}
	return s, nil
}

// recordOf is t's record schema, through a ["null", record] union; else nil.
func recordOf(t avro.Schema) *avro.RecordSchema {
	switch v := t.(type) {
	case *avro.RecordSchema:
		return v
	case *avro.UnionSchema:
		for _, m := range v.Types() {
			if r, ok := m.(*avro.RecordSchema); ok {
				return r
			}
		}
	case *avro.RefSchema:
		return recordOf(v.Schema())
	}
	return nil
}

// Header is the ChangeEventHeader (spec §9.6) with its bitmaps decoded into
// field names (§9.7): a top-level field by its name, a compound field's
// child as "Parent.Child".
type Header struct {
	EntityName      string
	RecordIDs       []string // none on GAP_OVERFLOW; "003*" means every record of the entity
	ChangeType      string
	ChangeOrigin    string
	TransactionKey  string
	SequenceNumber  int64
	CommitTimestamp time.Time
	CommitNumber    int64
	CommitUser      string
	ChangedFields   []string
	NulledFields    []string
	DiffFields      []string
}

// IsGap reports a header-only gap event (GAP_*, overflow included).
func (h Header) IsGap() bool { return strings.HasPrefix(h.ChangeType, "GAP_") }

// Client returns the client= value of ChangeOrigin (the writer's
// Sforce-Call-Options client, spec §9.6), a trailing "/" removed; "" when
// the writer sent none.
func (h Header) Client() string {
	for _, part := range strings.Split(h.ChangeOrigin, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "client="); ok {
			if i := strings.IndexAny(v, ", "); i >= 0 {
				v = v[:i]
			}
			return strings.TrimSuffix(v, "/")
		}
	}
	return ""
}

// FromClient reports whether the change was written by a caller that sent
// Sforce-Call-Options client=id: for a subscriber, its own writes.
func (h Header) FromClient(id string) bool { return id != "" && h.Client() == id }

// Event is one decoded change event.
type Event struct {
	ReplayID []byte
	ID       string // the event's id (ProducerEvent.id)
	SchemaID string
	Header   Header
	// Values holds the watched fields (the subscription's Fields) the event
	// carries a value for: changed, or enriched on a channel. Unchanged fields
	// are absent; a field set to null is absent here and in NulledFields.
	Values map[string]any
	// Err is set, and the rest but ReplayID, ID and SchemaID empty, when
	// the payload cannot be decoded with its schema (CodeUndecodableEvent):
	// the stream goes on, the caller decides (re-read, reconcile).
	Err error
}

// Bool returns a watched boolean field's value and whether the event has one.
func (e *Event) Bool(field string) (v, ok bool) {
	v, ok = e.Values[field].(bool)
	return v, ok
}

// String returns a watched string field's value and whether the event has one.
func (e *Event) String(field string) (string, bool) {
	v, ok := e.Values[field].(string)
	return v, ok
}

// Changed reports whether the header lists field as changed.
func (e *Event) Changed(field string) bool { return contains(e.Header.ChangedFields, field) }

// Nulled reports whether the header lists field as set to null.
func (e *Event) Nulled(field string) bool { return contains(e.Header.NulledFields, field) }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// decode reads payload with s and keeps the watched fields.
func decode(s *Schema, payload []byte, watched []string) (Header, map[string]any, error) {
	var m map[string]any
	if err := avro.Unmarshal(s.avro, payload, &m); err != nil {
		return Header{}, nil, fmt.Errorf("decode payload: %w", err)
	}
	raw, _ := m["ChangeEventHeader"].(map[string]any)
	if raw == nil {
		return Header{}, nil, errors.New("payload without ChangeEventHeader")
	}
	h := Header{
		EntityName:     str(raw["entityName"]),
		RecordIDs:      strs(raw["recordIds"]),
		ChangeType:     str(raw["changeType"]),
		ChangeOrigin:   str(raw["changeOrigin"]),
		TransactionKey: str(raw["transactionKey"]),
		SequenceNumber: num(raw["sequenceNumber"]),
		CommitNumber:   num(raw["commitNumber"]),
		CommitUser:     str(raw["commitUser"]),
	}
	if ms, ok := raw["commitTimestamp"]; ok && ms != nil {
		h.CommitTimestamp = time.UnixMilli(num(ms)).UTC()
	}
	var err error
	if h.ChangedFields, err = s.bitmapFields(strs(raw["changedFields"])); err != nil {
		return Header{}, nil, fmt.Errorf("changedFields: %w", err)
	}
	if h.NulledFields, err = s.bitmapFields(strs(raw["nulledFields"])); err != nil {
		return Header{}, nil, fmt.Errorf("nulledFields: %w", err)
	}
	if h.DiffFields, err = s.bitmapFields(strs(raw["diffFields"])); err != nil {
		return Header{}, nil, fmt.Errorf("diffFields: %w", err)
	}
	vals := map[string]any{}
	for _, f := range watched {
		if v, ok := m[f]; ok && v != nil {
			vals[f] = v
		}
	}
	return h, vals, nil
}

// bitmapFields decodes a §9.7 bitmap: element 0 "0x<hex>" is a big-endian
// number whose bit k marks top-level field k; "<i>-0x<hex>" marks the
// children of the compound field at index i. Bits past the schema's fields
// are ignored (nothing to name them by).
func (s *Schema) bitmapFields(bm []string) ([]string, error) {
	var out []string
	for _, el := range bm {
		parent := -1
		hex := el
		if i, rest, ok := strings.Cut(el, "-"); ok {
			n, err := strconv.Atoi(i)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bitmap element %q", el)
			}
			parent, hex = n, rest
		}
		digits, ok := strings.CutPrefix(strings.ToLower(hex), "0x")
		n, okNum := new(big.Int).SetString(digits, 16)
		if !ok || !okNum {
			return nil, fmt.Errorf("bitmap element %q", el)
		}
		names := s.fields
		prefix := ""
		if parent >= 0 {
			if parent >= len(s.child) {
				continue
			}
			names, prefix = s.child[parent], s.fields[parent]+"."
		}
		for k := 0; k < n.BitLen() && k < len(names); k++ {
			if n.Bit(k) == 1 {
				out = append(out, prefix+names[k])
			}
		}
	}
	return out, nil
}

func str(v any) string { s, _ := v.(string); return s }

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// num reads an Avro int or long however the decoder typed it.
func num(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case int64:
		return n
	}
	return 0
}
