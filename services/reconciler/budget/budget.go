// Package budget caps the Salesforce API calls of one reconcile run. The
// run puts a *Budget in the context of its Salesforce calls; Transport,
// installed in every tenant's client, counts each request against it and
// refuses the one that would go over, before it leaves the process. So a
// run never spends more than its share of the org's daily allowance, and
// every call is counted, retries and token-refresh repeats included.
package budget

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrExhausted is the error of a request refused because the run's budget
// is spent (wrapped in the client's *salesforce.Error; errors.Is finds it).
var ErrExhausted = errors.New("reconcile API budget spent")

// Kind labels what a call was for, in the report.
type Kind int

// Kinds.
const (
	Other Kind = iota
	Read
	Lookup
	Write
	numKinds
)

// Budget counts calls against a limit. Safe for concurrent use.
type Budget struct {
	mu     sync.Mutex
	limit  int64
	spent  int64
	byKind [numKinds]int64
	denied bool
	onDeny func()
	// date is the newest Date header of a response: Salesforce's clock.
	date time.Time
}

// ServerTime is the newest Date a response of the run carried (zero when
// none did): Salesforce's own clock, to the second, rounded down. A run
// marks where it read Salesforce up to with it, never with our clock.
func (b *Budget) ServerTime() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.date
}

func (b *Budget) observeDate(h string) {
	t, err := http.ParseTime(h)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.After(b.date) {
		b.date = t.UTC()
	}
}

// OnExhausted registers f, called once, when the first call is refused
// (e.g. to cancel the context of calls that would otherwise retry).
func (b *Budget) OnExhausted(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onDeny = f
}

// New returns a budget of limit calls (negative: unlimited until SetLimit).
func New(limit int64) *Budget { return &Budget{limit: limit} }

// SetLimit changes the limit (calls already spent stay spent).
func (b *Budget) SetLimit(limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = limit
}

// take counts one call of kind, or reports that none is left.
func (b *Budget) take(k Kind) bool {
	b.mu.Lock()
	if b.limit >= 0 && b.spent >= b.limit {
		first := !b.denied
		b.denied = true
		f := b.onDeny
		b.mu.Unlock()
		if first && f != nil {
			f()
		}
		return false
	}
	b.spent++
	b.byKind[k]++
	b.mu.Unlock()
	return true
}

// Spent is the number of calls sent.
func (b *Budget) Spent() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent
}

// SpentOn is the number of calls of one kind.
func (b *Budget) SpentOn(k Kind) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byKind[k]
}

// Limit returns the limit (negative: unlimited).
func (b *Budget) Limit() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit
}

// Remaining is how many calls are left (a large number when unlimited).
func (b *Budget) Remaining() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit < 0 {
		return 1 << 62
	}
	return max(b.limit-b.spent, 0)
}

// Exhausted reports whether a call was refused.
func (b *Budget) Exhausted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.denied
}

type budgetKey struct{}
type kindKey struct{}
type counterKey struct{}

// Counter counts the calls made with a context, for one part of a run (the
// pages of one object's read). Safe for concurrent use.
type Counter struct {
	mu sync.Mutex
	n  int64
}

// N returns the count.
func (c *Counter) N() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *Counter) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

// WithCounter returns ctx whose calls are also counted by c.
func WithCounter(ctx context.Context, c *Counter) context.Context {
	return context.WithValue(ctx, counterKey{}, c)
}

// With returns ctx carrying b: Salesforce calls made with it are counted.
func With(ctx context.Context, b *Budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

// From returns the budget in ctx, or nil.
func From(ctx context.Context) *Budget {
	b, _ := ctx.Value(budgetKey{}).(*Budget)
	return b
}

// WithKind labels the calls made with ctx.
func WithKind(ctx context.Context, k Kind) context.Context {
	return context.WithValue(ctx, kindKey{}, k)
}

// Transport counts each data request whose context carries a Budget and
// refuses it when the budget is spent. Token requests are not counted: they
// do not use the org's API allowance.
type Transport struct {
	// Next sends the request (default http.DefaultTransport).
	Next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	if strings.HasSuffix(r.URL.Path, "/services/oauth2/token") {
		return next.RoundTrip(r)
	}
	if b := From(r.Context()); b != nil {
		k, _ := r.Context().Value(kindKey{}).(Kind)
		if !b.take(k) {
			if r.Body != nil {
				_ = r.Body.Close() // a RoundTripper always closes the body
			}
			return nil, ErrExhausted
		}
	}
	if c, ok := r.Context().Value(counterKey{}).(*Counter); ok {
		c.add()
	}
	resp, err := next.RoundTrip(r)
	if b := From(r.Context()); b != nil && resp != nil {
		b.observeDate(resp.Header.Get("Date"))
	}
	return resp, err
}
