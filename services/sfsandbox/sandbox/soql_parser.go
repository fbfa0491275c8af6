package sandbox

import (
	"fmt"
	"strconv"
	"strings"
)

// soqlError is a query failure with the position Salesforce's caret points at.
type soqlError struct {
	code string // MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, INVALID_QUERY_FILTER_OPERATOR
	msg  string
	pos  int
}

func (e *soqlError) Error() string { return e.code + ": " + e.msg }

func malformedAt(pos int, msg string) *soqlError {
	return &soqlError{code: "MALFORMED_QUERY", msg: msg, pos: pos}
}

// render formats the message like Salesforce: the query line, a caret,
// "ERROR at Row:R:Column:C", then the reason.
func (e *soqlError) render(q string) string {
	row, lineStart := 1, 0
	for i := 0; i < e.pos && i < len(q); i++ {
		if q[i] == '\n' {
			row++
			lineStart = i + 1
		}
	}
	lineEnd := strings.IndexByte(q[lineStart:], '\n')
	line := q[lineStart:]
	if lineEnd >= 0 {
		line = q[lineStart : lineStart+lineEnd]
	}
	col := e.pos - lineStart + 1
	return fmt.Sprintf("\n%s\n%s^\nERROR at Row:%d:Column:%d\n%s", line, strings.Repeat(" ", col-1), row, col, e.msg)
}

// Abstract syntax of the supported SOQL subset.
type (
	soqlQuery struct {
		fields  []fieldRef
		object  fieldRef // object name and its position
		where   soqlExpr // nil when absent
		orderBy []orderItem
		limit   int // -1 when absent
	}
	fieldRef struct {
		name string
		pos  int
	}
	orderItem struct {
		field     fieldRef
		desc      bool
		nullsLast bool
	}
	soqlExpr interface{ isExpr() }
	andExpr  struct{ l, r soqlExpr }
	orExpr   struct{ l, r soqlExpr }
	notExpr  struct{ e soqlExpr }
	cmpExpr  struct {
		field fieldRef
		op    string // = != < > <= >= LIKE
		lit   token
	}
	inExpr struct {
		field fieldRef
		not   bool
		lits  []token
	}
)

func (andExpr) isExpr() {}
func (orExpr) isExpr()  {}
func (notExpr) isExpr() {}
func (cmpExpr) isExpr() {}
func (inExpr) isExpr()  {}

// parser is a recursive-descent parser over the token slice.
type parser struct {
	toks []token
	i    int
}

// parseSOQL parses SELECT f, ... FROM T [WHERE e] [ORDER BY ...] [LIMIT n].
func parseSOQL(q string) (*soqlQuery, *soqlError) {
	toks, err := lexSOQL(q)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	return p.query()
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tkEOF {
		p.i++
	}
	return t
}

func (p *parser) unexpected(t token) *soqlError {
	return malformedAt(t.pos, "unexpected token: "+t.display())
}

func (p *parser) keyword(kw string) *soqlError {
	if t := p.next(); !t.is(kw) {
		return p.unexpected(t)
	}
	return nil
}

func (p *parser) query() (*soqlQuery, *soqlError) {
	q := &soqlQuery{limit: -1}
	if err := p.keyword("SELECT"); err != nil {
		return nil, err
	}
	for {
		t := p.next()
		if t.kind != tkIdent || isReserved(t.text) {
			return nil, p.unexpected(t)
		}
		if p.peek().kind == tkLParen {
			// Functions (COUNT(), FIELDS(), aggregates) are outside the subset.
			return nil, malformedAt(t.pos, "unsupported function in sfsandbox: "+t.text)
		}
		q.fields = append(q.fields, fieldRef{name: t.text, pos: t.pos})
		if p.peek().kind != tkComma {
			break
		}
		p.next()
	}
	if err := p.keyword("FROM"); err != nil {
		return nil, err
	}
	obj := p.next()
	if obj.kind != tkIdent || isReserved(obj.text) {
		return nil, p.unexpected(obj)
	}
	q.object = fieldRef{name: obj.text, pos: obj.pos}
	if p.peek().is("WHERE") {
		p.next()
		e, err := p.orExpr()
		if err != nil {
			return nil, err
		}
		q.where = e
	}
	if p.peek().is("ORDER") {
		p.next()
		if err := p.keyword("BY"); err != nil {
			return nil, err
		}
		for {
			item, err := p.orderItem()
			if err != nil {
				return nil, err
			}
			q.orderBy = append(q.orderBy, item)
			if p.peek().kind != tkComma {
				break
			}
			p.next()
		}
	}
	if p.peek().is("LIMIT") {
		p.next()
		t := p.next()
		n, err := strconv.Atoi(t.text)
		if t.kind != tkNumber || err != nil || n < 0 {
			return nil, p.unexpected(t)
		}
		q.limit = n
	}
	if t := p.peek(); t.kind != tkEOF {
		return nil, p.unexpected(t)
	}
	return q, nil
}

func (p *parser) orderItem() (orderItem, *soqlError) {
	t := p.next()
	if t.kind != tkIdent || isReserved(t.text) {
		return orderItem{}, p.unexpected(t)
	}
	item := orderItem{field: fieldRef{name: t.text, pos: t.pos}}
	switch {
	case p.peek().is("ASC"):
		p.next()
	case p.peek().is("DESC"):
		p.next()
		item.desc = true
		item.nullsLast = true
	}
	if p.peek().is("NULLS") {
		p.next()
		switch t := p.next(); {
		case t.is("FIRST"):
			item.nullsLast = false
		case t.is("LAST"):
			item.nullsLast = true
		default:
			return orderItem{}, p.unexpected(t)
		}
	}
	return item, nil
}

// orExpr := andExpr { OR andExpr }
func (p *parser) orExpr() (soqlExpr, *soqlError) {
	l, err := p.andExpr()
	if err != nil {
		return nil, err
	}
	for p.peek().is("OR") {
		p.next()
		r, err := p.andExpr()
		if err != nil {
			return nil, err
		}
		l = orExpr{l, r}
	}
	return l, nil
}

// andExpr := unary { AND unary }
func (p *parser) andExpr() (soqlExpr, *soqlError) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.peek().is("AND") {
		p.next()
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = andExpr{l, r}
	}
	return l, nil
}

// unary := NOT unary | '(' orExpr ')' | condition
func (p *parser) unary() (soqlExpr, *soqlError) {
	t := p.peek()
	switch {
	case t.is("NOT"):
		p.next()
		e, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	case t.kind == tkLParen:
		p.next()
		e, err := p.orExpr()
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tkRParen {
			return nil, p.unexpected(c)
		}
		return e, nil
	}
	return p.condition()
}

// condition := field op literal | field [NOT] IN '(' literal {, literal} ')' | field LIKE string
func (p *parser) condition() (soqlExpr, *soqlError) {
	f := p.next()
	if f.kind != tkIdent || isReserved(f.text) {
		return nil, p.unexpected(f)
	}
	field := fieldRef{name: f.text, pos: f.pos}
	op := p.next()
	switch {
	case op.kind == tkOp:
		lit, err := p.literal()
		if err != nil {
			return nil, err
		}
		return cmpExpr{field: field, op: op.text, lit: lit}, nil
	case op.is("LIKE"):
		lit, err := p.literal()
		if err != nil {
			return nil, err
		}
		return cmpExpr{field: field, op: "LIKE", lit: lit}, nil
	case op.is("IN"), op.is("NOT"):
		not := op.is("NOT")
		if not {
			if err := p.keyword("IN"); err != nil {
				return nil, err
			}
		}
		if t := p.next(); t.kind != tkLParen {
			return nil, p.unexpected(t)
		}
		var lits []token
		for {
			lit, err := p.literal()
			if err != nil {
				return nil, err
			}
			lits = append(lits, lit)
			t := p.next()
			if t.kind == tkRParen {
				break
			}
			if t.kind != tkComma {
				return nil, p.unexpected(t)
			}
		}
		return inExpr{field: field, not: not, lits: lits}, nil
	}
	return nil, p.unexpected(op)
}

// literal := string | number | dateTime | date | true | false | null
func (p *parser) literal() (token, *soqlError) {
	t := p.next()
	switch t.kind {
	case tkString, tkNumber, tkDateTime, tkDate:
		return t, nil
	case tkIdent:
		if t.is("true") || t.is("false") || t.is("null") {
			return t, nil
		}
	}
	return token{}, p.unexpected(t)
}

var reservedWords = map[string]bool{
	"select": true, "from": true, "where": true, "and": true, "or": true, "not": true,
	"in": true, "like": true, "order": true, "by": true, "limit": true, "asc": true,
	"desc": true, "nulls": true, "null": true, "true": true, "false": true, "group": true,
	"having": true, "offset": true,
}

func isReserved(s string) bool { return reservedWords[strings.ToLower(s)] }
