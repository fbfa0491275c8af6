package sandbox

import (
	"regexp"
	"slices"
	"strings"
)

// compiledQuery is a parsed query bound to an org's schema.
type compiledQuery struct {
	typ    objType
	fields []fieldDef
	match  func(*rec) bool // nil matches every row
	order  []orderKey
	limit  int // -1 = none
	// ids, when non-nil, is the complete candidate set (WHERE Id IN/= at the
	// top level), so execution uses map lookups instead of a scan.
	ids []sfid
}

type orderKey struct {
	f         fieldDef
	desc      bool
	nullsLast bool
}

const invalidTypeTail = " is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."

const invalidFieldTail = ". If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."

// compileSOQL parses q and binds it to the schema the org exposes now.
func compileSOQL(q string, schemaFor func(objType) *schema) (*compiledQuery, *soqlError) {
	ast, err := parseSOQL(q)
	if err != nil {
		return nil, err
	}
	t, ok := typeByName(ast.object.name)
	if !ok {
		return nil, &soqlError{code: "INVALID_TYPE", pos: ast.object.pos, msg: "sObject type '" + ast.object.name + "'" + invalidTypeTail}
	}
	sc := schemaFor(t)
	b := binder{sc: sc}
	cq := &compiledQuery{typ: t, limit: ast.limit}
	seen := map[fieldID]bool{}
	for _, fr := range ast.fields {
		f, err := b.field(fr)
		if err != nil {
			return nil, err
		}
		if seen[f.ID] {
			return nil, malformedAt(fr.pos, "duplicate field selected: "+f.Name)
		}
		seen[f.ID] = true
		cq.fields = append(cq.fields, f)
	}
	if ast.where != nil {
		m, err := b.expr(ast.where)
		if err != nil {
			return nil, err
		}
		cq.match = m
		cq.ids = idCandidates(ast.where, sc)
	}
	for _, o := range ast.orderBy {
		f, err := b.field(o.field)
		if err != nil {
			return nil, err
		}
		cq.order = append(cq.order, orderKey{f: f, desc: o.desc, nullsLast: o.nullsLast})
	}
	return cq, nil
}

type binder struct{ sc *schema }

func (b binder) field(fr fieldRef) (fieldDef, *soqlError) {
	f, ok := b.sc.lookup(fr.name)
	if !ok {
		return fieldDef{}, &soqlError{code: "INVALID_FIELD", pos: fr.pos,
			msg: "No such column '" + fr.name + "' on entity '" + b.sc.typ.String() + "'" + invalidFieldTail}
	}
	return f, nil
}

func (b binder) expr(e soqlExpr) (func(*rec) bool, *soqlError) {
	switch e := e.(type) {
	case andExpr:
		l, err := b.expr(e.l)
		if err != nil {
			return nil, err
		}
		r, err := b.expr(e.r)
		if err != nil {
			return nil, err
		}
		return func(x *rec) bool { return l(x) && r(x) }, nil
	case orExpr:
		l, err := b.expr(e.l)
		if err != nil {
			return nil, err
		}
		r, err := b.expr(e.r)
		if err != nil {
			return nil, err
		}
		return func(x *rec) bool { return l(x) || r(x) }, nil
	case notExpr:
		in, err := b.expr(e.e)
		if err != nil {
			return nil, err
		}
		return func(x *rec) bool { return !in(x) }, nil
	case cmpExpr:
		f, err := b.field(e.field)
		if err != nil {
			return nil, err
		}
		v, err := literalFor(f, e.lit)
		if err != nil {
			return nil, err
		}
		return compare(f, e.op, v, e.lit.pos)
	case inExpr:
		f, err := b.field(e.field)
		if err != nil {
			return nil, err
		}
		var preds []func(*rec) bool
		for _, lit := range e.lits {
			v, err := literalFor(f, lit)
			if err != nil {
				return nil, err
			}
			p, err := compare(f, "=", v, lit.pos)
			if err != nil {
				return nil, err
			}
			preds = append(preds, p)
		}
		if f.Kind == kindID || f.Kind == kindRef {
			preds = []func(*rec) bool{idSetPredicate(f, e.lits)}
		}
		return func(x *rec) bool {
			for _, p := range preds {
				if p(x) {
					return !e.not
				}
			}
			return e.not
		}, nil
	}
	panic("unknown SOQL expression")
}

// litValue is a literal checked against its field's type.
type litValue struct {
	null bool
	b    bool
	s    string
	ms   int64
}

func typeMismatch(f fieldDef, lit token) *soqlError {
	want := map[fieldKind]string{kindBool: "boolean", kindDateTime: "dateTime", kindString: "string", kindID: "id", kindRef: "id"}[f.Kind]
	return malformedAt(lit.pos, "value of filter criterion for field '"+f.Name+"' must be of type "+want+" and should not be enclosed in quotes")
}

func literalFor(f fieldDef, lit token) (litValue, *soqlError) {
	if lit.is("null") {
		return litValue{null: true}, nil
	}
	switch f.Kind {
	case kindBool:
		if lit.is("true") || lit.is("false") {
			return litValue{b: lit.is("true")}, nil
		}
	case kindString:
		if lit.kind == tkString {
			return litValue{s: lit.text}, nil
		}
	case kindID, kindRef:
		if lit.kind == tkString {
			id, ok := To18(lit.text)
			if !ok {
				return litValue{}, &soqlError{code: "INVALID_QUERY_FILTER_OPERATOR", pos: lit.pos, msg: "invalid ID field: " + lit.text}
			}
			return litValue{s: id}, nil
		}
	case kindDateTime:
		if lit.kind == tkDateTime {
			return litValue{ms: lit.ms}, nil
		}
	}
	if lit.kind == tkIllegal {
		return litValue{}, malformedAt(lit.pos, "unexpected token: "+lit.text)
	}
	return litValue{}, typeMismatch(f, lit)
}

// compare builds the predicate "f op v". Null never orders against anything.
func compare(f fieldDef, op string, v litValue, pos int) (func(*rec) bool, *soqlError) {
	if v.null && op != "=" && op != "!=" {
		return nil, malformedAt(pos, "invalid operator "+op+" with null")
	}
	badOp := func() *soqlError {
		return &soqlError{code: "INVALID_QUERY_FILTER_OPERATOR", pos: pos, msg: "invalid operator on field " + f.Name + ": " + op}
	}
	switch f.Kind {
	case kindBool:
		get := boolGetter(f.ID)
		switch {
		case v.null && op == "=":
			return func(*rec) bool { return false }, nil
		case v.null:
			return func(*rec) bool { return true }, nil
		case op == "=":
			return func(x *rec) bool { return get(x) == v.b }, nil
		case op == "!=":
			return func(x *rec) bool { return get(x) != v.b }, nil
		}
		return nil, badOp()
	case kindDateTime:
		get := timeGetter(f.ID)
		if op == "LIKE" {
			return nil, badOp()
		}
		return func(x *rec) bool {
			ms, ok := get(x)
			if v.null {
				return ok == (op == "!=")
			}
			if !ok {
				return op == "!="
			}
			return ordered(op, cmpInt(ms, v.ms))
		}, nil
	default: // string, id, ref
		get := stringGetter(f.ID)
		fold := f.Kind == kindString
		if op == "LIKE" {
			if f.Kind != kindString {
				return nil, badOp()
			}
			re := likeRegexp(v.s)
			return func(x *rec) bool {
				s, ok := get(x)
				return ok && re.MatchString(s)
			}, nil
		}
		return func(x *rec) bool {
			s, ok := get(x)
			if v.null {
				return ok == (op == "!=")
			}
			if !ok {
				return op == "!="
			}
			if fold {
				return ordered(op, strings.Compare(strings.ToLower(s), strings.ToLower(v.s)))
			}
			return ordered(op, strings.Compare(s, v.s))
		}, nil
	}
}

// idSetPredicate matches an ID field against an IN list with one map lookup.
func idSetPredicate(f fieldDef, lits []token) func(*rec) bool {
	set := make(map[string]bool, len(lits))
	null := false
	for _, l := range lits {
		if l.is("null") {
			null = true
			continue
		}
		if id, ok := To18(l.text); ok {
			set[id] = true
		}
	}
	get := stringGetter(f.ID)
	return func(x *rec) bool {
		s, ok := get(x)
		if !ok {
			return null
		}
		return set[s]
	}
}

// idCandidates returns the IDs that bound the result when the WHERE clause
// is (an AND chain containing) Id = '…' or Id IN (…); nil otherwise.
func idCandidates(e soqlExpr, sc *schema) []sfid {
	switch e := e.(type) {
	case andExpr:
		if ids := idCandidates(e.l, sc); ids != nil {
			return ids
		}
		return idCandidates(e.r, sc)
	case cmpExpr:
		if f, ok := sc.lookup(e.field.name); ok && f.ID == fID && e.op == "=" && e.lit.kind == tkString {
			if id, ok := parseID(e.lit.text); ok {
				return []sfid{id}
			}
			return []sfid{}
		}
	case inExpr:
		if f, ok := sc.lookup(e.field.name); ok && f.ID == fID && !e.not {
			out := []sfid{}
			for _, l := range e.lits {
				if id, ok := parseID(l.text); ok && l.kind == tkString {
					out = append(out, id)
				}
			}
			return out
		}
	}
	return nil
}

func ordered(op string, c int) bool {
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	case ">=":
		return c >= 0
	}
	return false
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

func likeRegexp(pattern string) *regexp.Regexp {
	var sb strings.Builder
	sb.WriteString("(?is)^")
	for _, r := range pattern {
		switch r {
		case '%':
			sb.WriteString(".*")
		case '_':
			sb.WriteString(".")
		default:
			sb.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	sb.WriteString("$")
	return regexp.MustCompile(sb.String())
}

func boolGetter(f fieldID) func(*rec) bool {
	flag := map[fieldID]uint8{fOptOut: flagOptedOut, fCustom: flagCustom, fIsDeleted: flagDeleted, fIsConverted: flagConverted}[f]
	return func(x *rec) bool { return x.has(flag) }
}

func timeGetter(f fieldID) func(*rec) (int64, bool) {
	if f == fLastModifiedDate {
		return func(x *rec) (int64, bool) { return x.lastMod, x.lastMod != 0 }
	}
	return func(x *rec) (int64, bool) { return x.modstamp, x.modstamp != 0 }
}

func stringGetter(f fieldID) func(*rec) (string, bool) {
	switch f {
	case fID:
		return func(x *rec) (string, bool) { return x.id.String(), true }
	case fConvertedContactID:
		return func(x *rec) (string, bool) {
			if x.converted == nil {
				return "", false
			}
			return x.converted.String(), true
		}
	}
	return func(x *rec) (string, bool) { return x.email, x.email != "" }
}

// compareRecs orders two records by the query's ORDER BY keys.
func (cq *compiledQuery) compareRecs(a, b *rec) int {
	for _, k := range cq.order {
		c := compareField(k, a, b)
		if c != 0 {
			return c
		}
	}
	return 0
}

func compareField(k orderKey, a, b *rec) int {
	var c int
	var aNull, bNull bool
	switch k.f.Kind {
	case kindBool:
		g := boolGetter(k.f.ID)
		av, bv := g(a), g(b)
		if av != bv {
			c = 1
			if !av {
				c = -1
			}
		}
	case kindDateTime:
		g := timeGetter(k.f.ID)
		av, aok := g(a)
		bv, bok := g(b)
		aNull, bNull = !aok, !bok
		c = cmpInt(av, bv)
	default:
		g := stringGetter(k.f.ID)
		av, aok := g(a)
		bv, bok := g(b)
		aNull, bNull = !aok, !bok
		if k.f.Kind == kindString {
			av, bv = strings.ToLower(av), strings.ToLower(bv)
		}
		c = strings.Compare(av, bv)
	}
	if aNull != bNull {
		// Nulls sit at one end whatever the direction.
		if aNull == k.nullsLast {
			return 1
		}
		return -1
	}
	if k.desc {
		return -c
	}
	return c
}

// execute returns the refs of matching rows in result order. The refs stay
// valid because records are never removed, so cursors keep only this list.
func (s *store) execute(cq *compiledQuery, includeDeleted bool) []ref {
	s.mu.RLock()
	defer s.mu.RUnlock()
	list := s.recs[cq.typ]
	keep := func(r *rec) bool {
		if !includeDeleted && r.has(flagDeleted) {
			return false
		}
		return cq.match == nil || cq.match(r)
	}
	var out []ref
	if cq.ids != nil {
		seen := map[sfid]bool{}
		for _, id := range cq.ids {
			rf, ok := s.byID[id]
			if !ok || seen[id] || rf.typ() != cq.typ || !keep(&list[rf.idx()]) {
				continue
			}
			seen[id] = true
			out = append(out, rf)
		}
		slices.Sort(out) // table order, as a scan would give
	} else {
		for i := range list {
			if keep(&list[i]) {
				out = append(out, makeRef(cq.typ, i))
			}
		}
	}
	idOrderOnly := len(cq.order) == 1 && cq.order[0].f.ID == fID && !cq.order[0].desc && s.sorted[cq.typ]
	if len(cq.order) > 0 && !idOrderOnly {
		slices.SortStableFunc(out, func(a, b ref) int {
			return cq.compareRecs(&list[a.idx()], &list[b.idx()])
		})
	}
	if cq.limit >= 0 && len(out) > cq.limit {
		out = out[:cq.limit]
	}
	return out
}
