package sandbox

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Custom channels (§9.5): /data/<Name>__chn with members per entity, each
// with an optional filterExpression and enrichedFields. The emulator takes
// them from the control API; Salesforce takes them from the Tooling API
// (PlatformEventChannel / PlatformEventChannelMember).

// maxChannels is the documented cap on custom channels per org.
const maxChannels = 100

// ChannelMember is one entity of a custom channel.
type ChannelMember struct {
	// SelectedEntity is the change event name, e.g. ContactChangeEvent.
	SelectedEntity string `json:"selectedEntity"`
	// FilterExpression is SOQL-WHERE-like over entity fields and
	// ChangeEventHeader.<scalar>: = != > < >= <= LIKE IN NOT IN, AND, OR, NOT, parentheses.
	FilterExpression string `json:"filterExpression,omitempty"`
	// EnrichedFields are always sent on update and delete.
	EnrichedFields []string `json:"enrichedFields,omitempty"`
}

// Channel is a custom channel; Name ends in __chn.
type Channel struct {
	Name    string          `json:"name"`
	Members []ChannelMember `json:"members"`

	members []channelMember
}

type channelMember struct {
	entity string
	filter soqlExpr // nil: every event
	// fields the member needs post-change values of: filtered fields are
	// auto-enriched (§9.5), so both lists are sent.
	fields []string
}

// headerScalars are the ChangeEventHeader fields a filter may use; the
// array ones (recordIds, changedFields, diffFields, nulledFields) may not.
var headerScalars = []string{"entityName", "changeType", "changeOrigin", "transactionKey", "sequenceNumber", "commitTimestamp", "commitNumber", "commitUser"}

// SetChannel creates or replaces a custom channel.
func (o *Org) SetChannel(ch Channel) error {
	if !strings.HasSuffix(ch.Name, "__chn") || len(ch.Name) <= len("__chn") {
		return fmt.Errorf("channel %q: the name must end in __chn", ch.Name)
	}
	if len(ch.Members) == 0 {
		return fmt.Errorf("channel %s: no members", ch.Name)
	}
	custom := o.cdcCustom()
	ch.members = nil
	seen := map[string]bool{}
	for _, m := range ch.Members {
		ent, ok := strings.CutSuffix(m.SelectedEntity, "ChangeEvent")
		t, known := typeByName(ent)
		if !ok || !known {
			return fmt.Errorf("channel %s: selectedEntity %q is not ContactChangeEvent or LeadChangeEvent", ch.Name, m.SelectedEntity)
		}
		ent = t.String()
		if seen[ent] {
			return fmt.Errorf("channel %s: %s listed twice", ch.Name, m.SelectedEntity)
		}
		seen[ent] = true
		names := map[string]string{} // lower case -> schema name
		for _, f := range entityFields(ent, custom) {
			names[strings.ToLower(f.Name)] = f.Name
		}
		cm := channelMember{entity: ent}
		for _, f := range m.EnrichedFields {
			n, ok := names[strings.ToLower(f)]
			if !ok {
				return fmt.Errorf("channel %s: enriched field %q is not a field of %s", ch.Name, f, ent)
			}
			cm.fields = append(cm.fields, n)
		}
		if strings.TrimSpace(m.FilterExpression) != "" {
			e, refs, err := parseFilter(m.FilterExpression)
			if err != nil {
				return fmt.Errorf("channel %s: filterExpression: %w", ch.Name, err)
			}
			for _, r := range refs {
				if h, ok := strings.CutPrefix(r, "ChangeEventHeader."); ok {
					if !slices.Contains(headerScalars, h) {
						return fmt.Errorf("channel %s: filterExpression: %s is not a scalar header field", ch.Name, r)
					}
					continue
				}
				n, ok := names[strings.ToLower(r)]
				if !ok {
					return fmt.Errorf("channel %s: filterExpression: %s is not a field of %s", ch.Name, r, ent)
				}
				cm.fields = append(cm.fields, n)
			}
			cm.filter = e
		}
		ch.members = append(ch.members, cm)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	if _, exists := o.cdc.channels[ch.Name]; !exists && len(o.cdc.channels) >= maxChannels {
		return fmt.Errorf("channel %s: an org has at most %d custom channels", ch.Name, maxChannels)
	}
	o.cdc.channels[ch.Name] = &ch
	o.cdc.broadcast()
	return nil
}

// DeleteChannel removes a custom channel; it reports whether it existed.
func (o *Org) DeleteChannel(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	_, ok := o.cdc.channels[name]
	delete(o.cdc.channels, name)
	return ok
}

// Channels lists the custom channels.
func (o *Org) Channels() []Channel {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	out := []Channel{}
	for _, c := range o.cdc.channels {
		out = append(out, Channel{Name: c.Name, Members: c.Members})
	}
	slices.SortFunc(out, func(a, b Channel) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// channelFieldsLocked lists (sorted, case as given) the entity fields some
// channel member filters on or enriches; the caller holds Org.mu.
func (o *Org) channelFieldsLocked(entity string) []string {
	var out []string
	for _, c := range o.cdc.channels {
		for _, m := range c.members {
			if m.entity == entity {
				out = append(out, m.fields...)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// pick returns state's values of names (null when absent).
func pick(state []cdcField, names []string) []cdcField {
	var out []cdcField
	for _, n := range names {
		var v any
		for _, f := range state {
			if strings.EqualFold(f.name, n) {
				v = f.value
			}
		}
		out = append(out, cdcField{n, v})
	}
	return out
}

// matches tells whether the member delivers e; a nil member delivers all.
// [inference] Gap and overflow events pass every filter: they carry no
// values to filter on, and a subscriber must not miss them.
func (m *channelMember) matches(e *cdcEvent) bool {
	if m == nil || m.filter == nil || strings.HasPrefix(e.kind, "GAP_") {
		return true
	}
	return evalFilter(m.filter, func(name string) (any, bool) {
		if h, ok := strings.CutPrefix(name, "ChangeEventHeader."); ok {
			switch h {
			case "entityName":
				return e.entity, true
			case "changeType":
				return e.kind, true
			case "changeOrigin":
				return e.origin, true
			case "transactionKey":
				return e.txKey, true
			case "sequenceNumber":
				return int64(e.seqNumber), true
			case "commitTimestamp":
				return e.at, true
			case "commitNumber":
				return e.commitNumber, true
			}
			return nil, false
		}
		// [inference] Filters see the post-change value (unconfirmed).
		for _, f := range e.enriched {
			if strings.EqualFold(f.name, name) {
				return f.value, true
			}
		}
		return nil, false
	})
}

// parseFilter parses a filterExpression with the SOQL WHERE grammar; it
// returns the field names it references.
func parseFilter(expr string) (soqlExpr, []string, error) {
	toks, serr := lexSOQL(expr)
	if serr != nil {
		return nil, nil, serr
	}
	p := &parser{toks: toks}
	e, serr := p.orExpr()
	if serr != nil {
		return nil, nil, serr
	}
	if t := p.peek(); t.kind != tkEOF {
		return nil, nil, p.unexpected(t)
	}
	var refs []string
	var walk func(soqlExpr)
	walk = func(x soqlExpr) {
		switch v := x.(type) {
		case andExpr:
			walk(v.l)
			walk(v.r)
		case orExpr:
			walk(v.l)
			walk(v.r)
		case notExpr:
			walk(v.e)
		case cmpExpr:
			refs = append(refs, v.field.name)
		case inExpr:
			refs = append(refs, v.field.name)
		}
	}
	walk(e)
	return e, refs, nil
}

// evalFilter evaluates a parsed filter; unknown fields and nulls compare
// false except against null.
func evalFilter(e soqlExpr, get func(string) (any, bool)) bool {
	switch v := e.(type) {
	case andExpr:
		return evalFilter(v.l, get) && evalFilter(v.r, get)
	case orExpr:
		return evalFilter(v.l, get) || evalFilter(v.r, get)
	case notExpr:
		return !evalFilter(v.e, get)
	case cmpExpr:
		val, _ := get(v.field.name)
		return compareLit(val, v.op, v.lit)
	case inExpr:
		val, _ := get(v.field.name)
		in := slices.ContainsFunc(v.lits, func(l token) bool { return compareLit(val, "=", l) })
		return in != v.not
	}
	return false
}

func compareLit(val any, op string, lit token) bool {
	if lit.is("null") {
		switch op {
		case "=":
			return val == nil
		case "!=", "<>":
			return val != nil
		}
		return false
	}
	if val == nil {
		return op == "!=" || op == "<>"
	}
	var c int
	switch x := val.(type) {
	case bool:
		if !lit.is("true") && !lit.is("false") {
			return false
		}
		b := lit.is("true")
		if op == "=" {
			return x == b
		}
		return (op == "!=" || op == "<>") && x != b
	case string:
		if op == "LIKE" {
			return likeRegexp(lit.text).MatchString(x)
		}
		c = strings.Compare(x, lit.text)
	case int64:
		n := lit.ms
		if lit.kind == tkNumber {
			f, err := strconv.ParseFloat(lit.text, 64)
			if err != nil {
				return false
			}
			n = int64(f)
		}
		c = cmpInt(x, n)
	default:
		return false
	}
	switch op {
	case "=":
		return c == 0
	case "!=", "<>":
		return c != 0
	}
	return ordered(op, c)
}
