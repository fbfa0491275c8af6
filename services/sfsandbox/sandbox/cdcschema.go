package sandbox

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/hamba/avro/v2"
)

// entitySchema is one writer schema of <Entity>ChangeEvent (§9.6): record in
// namespace com.sforce.eventbus, field 0 ChangeEventHeader, then every entity
// field as ["null", T] with default null. Compound fields (Name,
// MailingAddress) are nested records; the emulator stores no values for them,
// so they are always null in payloads.
type entitySchema struct {
	id     string
	json   string
	avro   avro.Schema
	fields []string       // top-level field names in schema order (index 0 = ChangeEventHeader)
	index  map[string]int // name -> top-level index
}

// changeTypeSymbols are the Avro enum symbols. [inference] SNAPSHOT is left
// out: the spec marks it unconfirmed among the Avro symbols.
var changeTypeSymbols = []string{ChangeCreate, ChangeUpdate, ChangeDelete, ChangeUndelete,
	ChangeGapCreate, ChangeGapUpdate, ChangeGapDelete, ChangeGapUndelete, ChangeGapOverflow}

type avroField struct {
	Name    string `json:"name"`
	Type    any    `json:"type"`
	Default any    `json:"default"`
	Doc     string `json:"doc,omitempty"`
}

// headerField never has a default: it is always present.
type headerField struct {
	Name string `json:"name"`
	Type any    `json:"type"`
}

func nullable(t any) any { return []any{"null", t} }

func compound(name string, children ...string) any {
	fs := []avroField{}
	for _, c := range children {
		fs = append(fs, avroField{Name: c, Type: nullable("string")})
	}
	return map[string]any{"type": "record", "name": name, "fields": fs}
}

func changeEventHeaderType() any {
	arr := map[string]any{"type": "array", "items": "string"}
	return map[string]any{
		"type": "record", "name": "ChangeEventHeader",
		"fields": []headerField{
			{"entityName", "string"},
			{"recordIds", arr},
			{"changeType", map[string]any{"type": "enum", "name": "ChangeType", "symbols": changeTypeSymbols}},
			{"changeOrigin", "string"},
			{"transactionKey", "string"},
			{"sequenceNumber", "int"},
			{"commitTimestamp", "long"},
			{"commitNumber", "long"},
			{"commitUser", "string"},
			{"nulledFields", arr},
			{"diffFields", arr},
			{"changedFields", arr},
		},
	}
}

// entityFields lists the entity's fields in schema order with their Avro
// types; custom is the custom field when installed ("" otherwise). Dates and
// date-times are epoch-ms longs (§9.6).
func entityFields(entity, custom string) []avroField {
	name := avroField{Name: "Name", Type: nullable(compound("Switchable_PersonName", "Salutation", "FirstName", "LastName"))}
	var fs []avroField
	switch entity {
	case "Contact":
		fs = []avroField{name,
			{Name: "Email", Type: nullable("string")},
			{Name: "HasOptedOutOfEmail", Type: nullable("boolean")},
			{Name: "MailingAddress", Type: nullable(compound("Address", "Street", "City", "State", "PostalCode", "Country"))},
			{Name: "LastModifiedDate", Type: nullable("long")},
		}
	case "Lead":
		fs = []avroField{name,
			{Name: "Email", Type: nullable("string")},
			{Name: "HasOptedOutOfEmail", Type: nullable("boolean")},
			{Name: "Status", Type: nullable("string")},
			{Name: "IsConverted", Type: nullable("boolean")},
			{Name: "ConvertedDate", Type: nullable("long")},
			{Name: "ConvertedAccountId", Type: nullable("string")},
			{Name: "ConvertedContactId", Type: nullable("string")},
			{Name: "ConvertedOpportunityId", Type: nullable("string")},
			{Name: "LastModifiedDate", Type: nullable("long")},
		}
	default: // Account: only created by Lead conversion, never selected here
		fs = []avroField{{Name: "Name", Type: nullable("string")}, {Name: "LastModifiedDate", Type: nullable("long")}}
	}
	if custom != "" && (entity == "Contact" || entity == "Lead") {
		fs = append(fs, avroField{Name: custom, Type: nullable("boolean")})
	}
	return fs
}

func buildEntitySchema(entity, custom string) (*entitySchema, error) {
	fields := []any{headerField{Name: "ChangeEventHeader", Type: changeEventHeaderType()}}
	names := []string{"ChangeEventHeader"}
	for _, f := range entityFields(entity, custom) {
		fields = append(fields, f)
		names = append(names, f.Name)
	}
	doc := map[string]any{"type": "record", "name": entity + "ChangeEvent", "namespace": "com.sforce.eventbus", "fields": fields}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("change event schema %s: %w", entity, err)
	}
	sc, err := avro.Parse(string(js))
	if err != nil {
		return nil, fmt.Errorf("change event schema %s: %w", entity, err)
	}
	fp := sc.(*avro.RecordSchema).Fingerprint()
	// schema_id is a fingerprint of the schema (§9.6), so a new field gives a
	// new id. [inference] Its textual form is ours: 22 base64url characters.
	es := &entitySchema{id: base64.RawURLEncoding.EncodeToString(fp[:16]), json: string(js), avro: sc, fields: names, index: map[string]int{}}
	for i, n := range names {
		es.index[n] = i
	}
	return es, nil
}

// schemaLocked returns the entity's current writer schema, registering it
// so GetSchema keeps serving ids events were written with; the caller holds Org.mu.
func (o *Org) schemaLocked(entity string) *entitySchema {
	c := &o.cdc
	c.init()
	custom := ""
	if o.cfg.CustomFieldInstalled {
		custom = o.cfg.CustomField
	}
	key := entity + "\x00" + custom
	if es, ok := c.schemas[key]; ok {
		return es
	}
	es, err := buildEntitySchema(entity, custom)
	if err != nil {
		panic(err) // built from constants and a validated field name
	}
	c.schemas[key] = es
	c.schemas[es.id] = es
	return es
}

// encodeEvent renders a stored event as the Avro payload of its writer schema.
// m, when set, is the custom channel member delivering it: its enriched
// and filtered fields are sent on update and delete even when unchanged (§9.5).
func (o *Org) encodeEvent(e *cdcEvent, es *entitySchema, m *channelMember) ([]byte, error) {
	var changed, nulled []int
	values := map[string]any{}
	for _, name := range es.fields[1:] {
		values[name] = nil
	}
	for _, f := range e.fields {
		i, ok := es.index[f.name]
		if !ok {
			continue
		}
		if f.value == nil {
			nulled = append(nulled, i)
		} else {
			values[f.name] = f.value
		}
		if e.kind == ChangeUpdate {
			changed = append(changed, i)
		}
	}
	if m != nil && (e.kind == ChangeUpdate || e.kind == ChangeDelete) {
		for _, f := range pick(e.enriched, m.fields) {
			if _, ok := es.index[f.name]; ok && values[f.name] == nil {
				values[f.name] = f.value
			}
		}
	}
	bm := func(idx []int) []string {
		if len(idx) == 0 {
			return []string{}
		}
		return []string{bitmap(idx)}
	}
	recordIDs := e.recordIDs
	if recordIDs == nil {
		recordIDs = []string{}
	}
	values["ChangeEventHeader"] = map[string]any{
		"entityName":      e.entity,
		"recordIds":       recordIDs,
		"changeType":      e.kind,
		"changeOrigin":    e.origin,
		"transactionKey":  e.txKey,
		"sequenceNumber":  e.seqNumber,
		"commitTimestamp": e.at,
		"commitNumber":    e.commitNumber,
		"commitUser":      o.userID.String(),
		"nulledFields":    bm(nulled),
		"diffFields":      []string{},
		"changedFields":   bm(changed),
	}
	b, err := avro.Marshal(es.avro, values)
	if err != nil {
		return nil, fmt.Errorf("encode %s change event: %w", e.entity, err)
	}
	return b, nil
}
