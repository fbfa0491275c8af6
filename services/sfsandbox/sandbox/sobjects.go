package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// recErr is a record-level failure; status is used by single-record routes.
type recErr struct {
	status int
	code   string
	msg    string
	fields []string
}

// assignment is one validated field value of a write body.
type assignment struct {
	f    fieldDef
	null bool
	b    bool
	s    string
}

const fieldSecurityTail = ". Please check the security settings of this field and verify that it is read/write for your profile or permission set."

// parseAssignments validates a write body against the schema. Keys for
// which skip returns true (attributes, id) are ignored.
func parseAssignments(sc *schema, body map[string]json.RawMessage, keys []string, skip func(string) bool) ([]assignment, *recErr) {
	var out []assignment
	var readOnly []string
	for _, k := range keys {
		if skip(k) {
			continue
		}
		f, ok := sc.lookup(k)
		if !ok {
			return nil, &recErr{status: 400, code: "INVALID_FIELD", msg: "No such column '" + k + "' on sobject of type " + sc.typ.String(), fields: []string{}}
		}
		if !f.Writable {
			readOnly = append(readOnly, f.Name)
			continue
		}
		a := assignment{f: f}
		raw := bytes.TrimSpace(body[k])
		switch {
		case string(raw) == "null":
			a.null = true
		case f.Kind == kindBool:
			if err := json.Unmarshal(raw, &a.b); err != nil {
				return nil, &recErr{status: 400, code: "JSON_PARSER_ERROR", msg: "Cannot deserialize instance of boolean from " + string(raw) + " value for field " + f.Name, fields: []string{}}
			}
		default:
			if err := json.Unmarshal(raw, &a.s); err != nil {
				return nil, &recErr{status: 400, code: "JSON_PARSER_ERROR", msg: "Cannot deserialize instance of string from " + string(raw) + " value for field " + f.Name, fields: []string{}}
			}
		}
		out = append(out, a)
	}
	if len(readOnly) > 0 {
		return nil, &recErr{status: 400, code: "INVALID_FIELD_FOR_INSERT_UPDATE",
			msg: "Unable to create/update fields: " + strings.Join(readOnly, ", ") + fieldSecurityTail, fields: readOnly}
	}
	return out, nil
}

// decodeObject decodes a JSON object keeping its key order.
func decodeObject(data []byte) (map[string]json.RawMessage, []string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("expected a JSON object")
	}
	m := map[string]json.RawMessage{}
	var keys []string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := m[k]; !dup {
			keys = append(keys, k)
		}
		m[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	return m, keys, nil
}

// checkWritable reports why r cannot be updated, or nil.
// It takes no org lock: callers hold the store lock (lock order is o.mu before st.mu).
func checkWritable(r *rec, missingCode string, convertedStatus int) *recErr {
	switch {
	case r == nil && missingCode == "ENTITY_IS_DELETED":
		return &recErr{status: 404, code: "ENTITY_IS_DELETED", msg: "entity is deleted", fields: []string{}}
	case r == nil:
		return &recErr{status: 404, code: missingCode, msg: msgNotFound, fields: []string{}}
	case r.has(flagDeleted):
		return &recErr{status: 404, code: "ENTITY_IS_DELETED", msg: "entity is deleted", fields: []string{}}
	case r.has(flagConverted):
		return &recErr{status: convertedStatus, code: "CANNOT_UPDATE_CONVERTED_LEAD", msg: "cannot reference converted lead", fields: []string{}}
	}
	return nil
}

// apply writes the assignments as the API user: both timestamps move.
// The caller holds the store's write lock.
func apply(r *rec, as []assignment, now int64) []string {
	var changed []string
	for _, a := range as {
		switch a.f.ID {
		case fEmail:
			r.email = a.s
		case fOptOut:
			r.set(flagOptedOut, a.b && !a.null)
		case fCustom:
			r.set(flagCustom, a.b && !a.null)
		}
		changed = append(changed, a.f.Name)
	}
	r.lastMod, r.modstamp = now, now
	return changed
}

// autoAssignRuns tells whether Lead assignment rules run for this call
// (Sforce-Auto-Assign defaults to TRUE).
func autoAssignRuns(r *http.Request) bool {
	v := strings.TrimSpace(r.Header.Get("Sforce-Auto-Assign"))
	return !strings.EqualFold(v, "FALSE") && v != "0"
}

func changeOrigin(rc *reqCtx) string {
	o := "com/salesforce/api/rest/" + rc.version
	if c := rc.call.Client; c != "" {
		o += ";client=" + c
	}
	return o
}

// resolveURLRecord validates the {T}/{id} of a single-record route; it
// answers the error itself and returns false when invalid.
func resolveURLRecord(rc *reqCtx) (objType, sfid, bool) {
	t, ok := typeByName(rc.segs[1])
	if !ok {
		writeError(rc.w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		return 0, sfid{}, false
	}
	raw := rc.segs[2]
	id, ok := parseID(raw)
	if !ok {
		writeError(rc.w, http.StatusNotFound, "NOT_FOUND", "Provided external ID field does not exist or is not accessible: "+raw, nil)
		return 0, sfid{}, false
	}
	if id.Prefix() != typePrefixes[t] {
		rc.o.mu.Lock()
		status := rc.o.cfg.Behavior.MalformedIDStatus
		rc.o.mu.Unlock()
		writeError(rc.w, status, "MALFORMED_ID", t.String()+" ID: id value of incorrect type: "+raw, []string{"Id"})
		return 0, sfid{}, false
	}
	return t, id, true
}

func handleSObjectPatch(rc *reqCtx) {
	t, id, ok := resolveURLRecord(rc)
	if !ok {
		return
	}
	data, err := readBody(rc.r)
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", err.Error(), nil)
		return
	}
	body, keys, err := decodeObject(data)
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "The request body is not a JSON object: "+err.Error(), nil)
		return
	}
	sc := rc.o.schemaFor(t)
	as, rerr := parseAssignments(sc, body, keys, func(k string) bool {
		return k == "attributes" || strings.EqualFold(k, "Id") && strings.Trim(string(body[k]), `"`) == rc.segs[2]
	})
	if rerr != nil {
		writeError(rc.w, rerr.status, rerr.code, rerr.msg, rerr.fields)
		return
	}
	o := rc.o
	o.mu.Lock()
	convertedStatus := o.cfg.Behavior.ConvertedLeadStatus
	o.mu.Unlock()
	custom := o.cdcCustom()
	s := o.st
	s.mu.Lock()
	r, found := s.lookup(id)
	if !found {
		r = nil
	}
	if rerr := checkWritable(r, "NOT_FOUND", convertedStatus); rerr != nil {
		s.mu.Unlock()
		writeError(rc.w, rerr.status, rerr.code, rerr.msg, rerr.fields)
		return
	}
	before := *r
	changed := rc.applyWrite(r, as, msOf(o.now()))
	cdc := diffChange(&before, r, custom, true)
	s.mu.Unlock()
	if t == typeLead && autoAssignRuns(rc.r) {
		rc.call.AssignmentRules = true
	}
	rc.call.Records = 1
	rc.recordChange(id.String(), t.String(), "UPDATE", changed, changeOrigin(rc))
	rc.commitCDC([]cdcChange{cdc})
	rc.w.WriteHeader(http.StatusNoContent)
}

func handleSObjectGet(rc *reqCtx) {
	t, id, ok := resolveURLRecord(rc)
	if !ok {
		return
	}
	sc := rc.o.schemaFor(t)
	fields := sc.fields
	if fs := rc.r.URL.Query().Get("fields"); fs != "" {
		var err *recErr
		fields, err = selectFields(sc, splitIDs(fs))
		if err != nil {
			writeError(rc.w, err.status, err.code, err.msg, nil)
			return
		}
	}
	s := rc.o.st
	s.mu.RLock()
	r, found := s.lookup(id)
	if !found || r.has(flagDeleted) {
		s.mu.RUnlock()
		if found {
			writeError(rc.w, http.StatusNotFound, "ENTITY_IS_DELETED", "entity is deleted", []string{})
		} else {
			writeError(rc.w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		}
		return
	}
	out := renderRecord(r, fields, rc.version)
	s.mu.RUnlock()
	writeJSON(rc.w, http.StatusOK, out)
}

// selectFields resolves a fields= list; unknown names fail like SOQL does.
func selectFields(sc *schema, names []string) ([]fieldDef, *recErr) {
	var out []fieldDef
	for _, n := range names {
		f, ok := sc.lookup(n)
		if !ok {
			return nil, &recErr{status: 400, code: "INVALID_FIELD", msg: "No such column '" + n + "' on entity '" + sc.typ.String() + "'" + invalidFieldTail}
		}
		out = append(out, f)
	}
	return out, nil
}

// renderRecord builds the JSON object of a record (attributes first, then
// fields in the requested order). The caller holds the store's read lock.
func renderRecord(r *rec, fields []fieldDef, version string) orderedObject {
	obj := orderedObject{
		{"attributes", attributes{Type: r.typ.String(), URL: "/services/data/v" + version + "/sobjects/" + r.typ.String() + "/" + r.id.String()}},
	}
	for _, f := range fields {
		obj = append(obj, kv{f.Name, jsonValue(r, f.ID)})
	}
	return obj
}

type attributes struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

type kv struct {
	k string
	v any
}

// orderedObject marshals as a JSON object keeping key order, as Salesforce does.
type orderedObject []kv

func (o orderedObject) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, fmt.Errorf("marshal field %s: %w", e.k, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func handleDescribe(rc *reqCtx) {
	t, ok := typeByName(rc.segs[1])
	if !ok {
		writeError(rc.w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		return
	}
	sc := rc.o.schemaFor(t)
	type field struct {
		Name       string `json:"name"`
		Label      string `json:"label"`
		Type       string `json:"type"`
		Updateable bool   `json:"updateable"`
		Createable bool   `json:"createable"`
		Nillable   bool   `json:"nillable"`
		Custom     bool   `json:"custom"`
		SoapType   string `json:"soapType"`
	}
	soap := map[string]string{"id": "tns:ID", "boolean": "xsd:boolean", "email": "xsd:string", "datetime": "xsd:dateTime", "reference": "tns:ID"}
	fields := []field{}
	for _, f := range sc.fields {
		fields = append(fields, field{Name: f.Name, Label: f.Label, Type: f.SFType, Updateable: f.Writable, Createable: f.Writable,
			Nillable: f.Kind == kindString || f.Kind == kindRef, Custom: strings.HasSuffix(f.Name, "__c"), SoapType: soap[f.SFType]})
	}
	base := "/services/data/v" + rc.version + "/sobjects/" + t.String()
	writeJSON(rc.w, http.StatusOK, map[string]any{
		"name": t.String(), "label": t.String(), "keyPrefix": typePrefixes[t],
		"updateable": true, "queryable": true, "retrieveable": true, "custom": false,
		"fields": fields,
		"urls":   map[string]string{"sobject": base, "describe": base + "/describe", "rowTemplate": base + "/{ID}"},
	})
}

// readBody reads a request body with a cap, so a runaway client cannot
// exhaust memory.
func readBody(r *http.Request) ([]byte, error) {
	const maxBody = 150 << 20
	var b bytes.Buffer
	n, err := b.ReadFrom(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read body after %d bytes: %w", n, err)
	}
	return b.Bytes(), nil
}
