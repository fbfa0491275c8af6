package sandbox

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	defaultBatchSize = 2000
	minBatchSize     = 200
	maxBatchSize     = 2000
)

// cursor is an open query: the matching rows' refs, computed once, and
// what to render. Pages read the records' current values.
type cursor struct {
	locator   string
	cq        *compiledQuery
	refs      []ref
	batchSize int
	expires   time.Time
}

// batchSize reads Sforce-Query-Options: batchSize=N, clamped to 200..2000.
func batchSize(r *http.Request, def int) int {
	for _, part := range strings.Split(r.Header.Get("Sforce-Query-Options"), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(k, "batchSize") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return def
		}
		return min(max(n, minBatchSize), maxBatchSize)
	}
	return def
}

// compile parses q for this org; it answers the 400 itself on failure.
func (o *Org) compile(w http.ResponseWriter, q string) (*compiledQuery, bool) {
	cq, err := compileSOQL(q, o.schemaFor)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.code, err.render(q), nil)
		return nil, false
	}
	return cq, true
}

func handleQuery(rc *reqCtx) {
	q := rc.r.URL.Query().Get("q")
	if strings.TrimSpace(q) == "" {
		writeError(rc.w, http.StatusBadRequest, "MALFORMED_QUERY", "A query string has to be specified", nil)
		return
	}
	cq, ok := rc.o.compile(rc.w, q)
	if !ok {
		return
	}
	all := rc.segs[0] == "queryAll"
	refs := rc.o.st.execute(cq, all)
	c := &cursor{cq: cq, refs: refs, batchSize: batchSize(rc.r, defaultBatchSize)}
	if len(refs) > c.batchSize {
		rc.o.openCursor(c)
	}
	rc.o.writePage(rc, c, 0)
}

// openCursor registers c under a fresh locator, evicting the oldest cursors
// beyond MaxQueryCursors.
func (o *Org) openCursor(c *cursor) {
	n := o.nextSeq()
	c.locator = makeID(prefixLocator, n).String()
	o.mu.Lock()
	defer o.mu.Unlock()
	c.expires = o.now().Add(o.cfg.Behavior.QueryCursorTTL)
	o.cursors[c.locator] = c
	o.cursorOrder = append(o.cursorOrder, c.locator)
	for len(o.cursorOrder) > o.cfg.Behavior.MaxQueryCursors {
		delete(o.cursors, o.cursorOrder[0])
		o.cursorOrder = o.cursorOrder[1:]
	}
}

// ExpireQueryLocators drops every open cursor: further pages answer INVALID_QUERY_LOCATOR.
func (o *Org) ExpireQueryLocators() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cursors = map[string]*cursor{}
	o.cursorOrder = nil
}

// OpenQueryLocators counts the cursors still held.
func (o *Org) OpenQueryLocators() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.cursors)
}

func handleQueryMore(rc *reqCtx) {
	o := rc.o
	loc, offStr, ok := strings.Cut(rc.segs[1], "-")
	off, err := strconv.Atoi(offStr)
	o.mu.Lock()
	c := o.cursors[loc]
	status := o.cfg.Behavior.QueryLocatorStatus
	if c != nil && !o.now().Before(c.expires) {
		delete(o.cursors, loc)
		c = nil
	}
	o.mu.Unlock()
	if !ok || err != nil || c == nil || off < 0 || off > len(c.refs) {
		writeError(rc.w, status, "INVALID_QUERY_LOCATOR", "invalid query locator", nil)
		return
	}
	// A batchSize on the follow-up call wins, as the header is per request.
	page := *c
	page.batchSize = batchSize(rc.r, c.batchSize)
	o.writePage(rc, &page, off)
}

// writePage renders rows [off, off+batch) of c.
func (o *Org) writePage(rc *reqCtx, c *cursor, off int) {
	end := min(off+c.batchSize, len(c.refs))
	records := make([]orderedObject, 0, end-off)
	s := o.st
	s.mu.RLock()
	for _, rf := range c.refs[off:end] {
		r := &s.recs[rf.typ()][rf.idx()]
		records = append(records, renderRecord(r, c.cq.fields, rc.version))
	}
	s.mu.RUnlock()
	body := orderedObject{{"totalSize", len(c.refs)}, {"done", end >= len(c.refs)}}
	if end < len(c.refs) {
		body = append(body, kv{"nextRecordsUrl", "/services/data/v" + rc.version + "/query/" + c.locator + "-" + strconv.Itoa(end)})
	}
	body = append(body, kv{"records", records})
	writeJSON(rc.w, http.StatusOK, body)
}
