package sandbox

import (
	"fmt"
	"strings"
	"time"
)

// tokKind classifies SOQL tokens.
type tokKind uint8

const (
	tkEOF tokKind = iota
	tkIdent
	tkString
	tkNumber
	tkDateTime
	tkDate
	tkComma
	tkLParen
	tkRParen
	tkOp
	tkIllegal
)

// token is one lexeme with its byte offset in the query, for error carets.
type token struct {
	kind tokKind
	text string // raw text; for strings the unescaped value
	pos  int
	ms   int64 // dateTime/date value in Unix ms
}

// is reports whether t is the keyword kw (case-insensitive).
func (t token) is(kw string) bool { return t.kind == tkIdent && equalFold(t.text, kw) }

// display is how an error message names the token.
func (t token) display() string {
	switch t.kind {
	case tkEOF:
		return "<EOF>"
	case tkString:
		return "'" + t.text + "'"
	}
	return t.text
}

// lexSOQL splits a query into tokens; it fails only on unterminated strings
// and characters SOQL does not use.
func lexSOQL(q string) ([]token, *soqlError) {
	var toks []token
	i := 0
	for i < len(q) {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == ',':
			toks = append(toks, token{kind: tkComma, text: ",", pos: i})
			i++
		case c == '(':
			toks = append(toks, token{kind: tkLParen, text: "(", pos: i})
			i++
		case c == ')':
			toks = append(toks, token{kind: tkRParen, text: ")", pos: i})
			i++
		case c == '=':
			toks = append(toks, token{kind: tkOp, text: "=", pos: i})
			i++
		case c == '!' || c == '<' || c == '>':
			start := i
			i++
			if i < len(q) && (q[i] == '=' || (c == '<' && q[i] == '>')) {
				i++
			}
			text := q[start:i]
			if text == "!" {
				return nil, malformedAt(start, "unexpected token: !")
			}
			if text == "<>" {
				text = "!="
			}
			toks = append(toks, token{kind: tkOp, text: text, pos: start})
		case c == '\'':
			start := i
			var sb strings.Builder
			i++
			closed := false
			for i < len(q) {
				ch := q[i]
				if ch == '\\' && i+1 < len(q) {
					switch n := q[i+1]; n {
					case 'n':
						sb.WriteByte('\n')
					case 't':
						sb.WriteByte('\t')
					case 'r':
						sb.WriteByte('\r')
					default:
						sb.WriteByte(n)
					}
					i += 2
					continue
				}
				if ch == '\'' {
					closed = true
					i++
					break
				}
				sb.WriteByte(ch)
				i++
			}
			if !closed {
				return nil, malformedAt(start, "line 1:"+fmt.Sprint(start)+" mismatched character '<EOF>' expecting '''")
			}
			toks = append(toks, token{kind: tkString, text: sb.String(), pos: start})
		case isDigit(c) || (c == '-' || c == '+') && i+1 < len(q) && isDigit(q[i+1]):
			tok, n := lexNumberOrDate(q[i:])
			tok.pos = i
			toks = append(toks, tok)
			i += n
		case isIdentStart(c):
			start := i
			for i < len(q) && isIdentPart(q[i]) {
				i++
			}
			toks = append(toks, token{kind: tkIdent, text: q[start:i], pos: start})
		default:
			return nil, malformedAt(i, "unexpected token: "+string(c))
		}
	}
	toks = append(toks, token{kind: tkEOF, pos: len(q)})
	return toks, nil
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentPart(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '.' || c == ':' }

// lexNumberOrDate reads a number, a date (YYYY-MM-DD) or a dateTime
// (YYYY-MM-DDThh:mm:ss[.SSS](Z|±hh:mm)) from the start of s.
func lexNumberOrDate(s string) (token, int) {
	if len(s) >= 10 && isDigit(s[0]) && s[4] == '-' && s[7] == '-' {
		end := 10
		for end < len(s) && (isDigit(s[end]) || strings.IndexByte("T:.Z+-", s[end]) >= 0) {
			end++
		}
		text := s[:end]
		for _, layout := range []string{"2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05.999Z07:00"} {
			if t, err := time.Parse(layout, text); err == nil {
				return token{kind: tkDateTime, text: text, ms: t.UnixMilli()}, end
			}
		}
		if t, err := time.Parse("2006-01-02", text); err == nil {
			return token{kind: tkDate, text: text, ms: t.UnixMilli()}, end
		}
		return token{kind: tkIllegal, text: text}, end
	}
	end := 1
	for end < len(s) && (isDigit(s[end]) || s[end] == '.') {
		end++
	}
	return token{kind: tkNumber, text: s[:end]}, end
}
