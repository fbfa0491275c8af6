package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The load generator is built to cost the machine as little as possible,
// so that what it measures is the server: every request is built before
// the drive (bytes ready to write), a fixed pool of kept-alive connections
// sends them (no connection set-up, no goroutine per request, no
// net/http client), and responses are parsed by hand for the status, the
// Server-Timing and the result. It is open-loop: a scheduler releases
// request i at start + i/rate whatever the answers do, and its latency
// counts from then (not from when a connection was free to send it), so
// a stall is charged for every request queued behind it (no coordinated
// omission).

// conns is the connection pool: enough that a stall of the server of up
// to conns/rate (64 ms at 1,000 a second) queues nothing in the client.
const conns = 64

type sample struct {
	total   time.Duration // from when the request was due to the whole answer
	service time.Duration // from the write to the whole answer
	server  time.Duration // the handler's own time (Server-Timing)
	outcome string
}

// buildRequests makes the drive's requests: a third each by email, Sales
// Connect id and Salesforce id, of random persons, one in eleven not in the
// ledger.
func buildRequests(o options, n int, host string) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	reqs := make([][]byte, n)
	for i := range n {
		p := rng.IntN(o.entries + o.entries/10)
		tenant, sc, sf, email := person(o, p)
		var q string
		switch i % 3 {
		case 0:
			q = "email=" + url.QueryEscape(email)
		case 1:
			q = "salesConnectId=" + sc
		default:
			q = "salesforceId=" + sf
		}
		reqs[i] = fmt.Appendf(nil, "GET /v1/tenants/%s/suppression?%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s-%s\r\n\r\n",
			tenant, q, host, token, tenant)
	}
	return reqs
}

// drive sends reqs at o.rate a second over conns connections to addr.
func drive(addr string, reqs [][]byte, rate int) (result, error) {
	pool := make([]*conn, conns)
	for i := range pool {
		c, err := dial(addr)
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		pool[i] = c
	}
	n := len(reqs)
	interval := time.Second / time.Duration(rate)
	samples := make([]sample, n)
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, n)
	var wg sync.WaitGroup
	for _, c := range pool {
		wg.Go(func() {
			for j := range jobs {
				s := c.do(reqs[j.i])
				s.total = time.Since(j.due)
				samples[j.i] = s
			}
		})
	}
	start := time.Now()
	var late time.Duration
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else if -d > late {
			late = -d
		}
		jobs <- job{i, due}
	}
	close(jobs)
	wg.Wait()
	res := result{samples: samples, codes: map[string]int{}, elapsed: time.Since(start), schedulerLate: late}
	for _, s := range samples {
		res.codes[s.outcome]++
		if s.outcome == "error" {
			res.errors++
		}
	}
	return res, nil
}

type conn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	body []byte
}

func dial(addr string) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{addr: addr, c: c, r: bufio.NewReaderSize(c, 8192), body: make([]byte, 0, 4096)}, nil
}

func (c *conn) Close() { _ = c.c.Close() }

// do sends one request and reads its answer; on an error the connection
// is dialled again for the next one.
func (c *conn) do(req []byte) sample {
	sent := time.Now()
	code, srv, result, err := c.roundTrip(req)
	s := sample{service: time.Since(sent), server: srv}
	if err != nil {
		s.outcome = "error"
		c.c.Close()
		if nc, derr := dial(c.addr); derr == nil {
			*c = *nc
		}
		return s
	}
	s.outcome = strconv.Itoa(code) + " " + result
	return s
}

var (
	hdrLength = []byte("content-length:")
	hdrTiming = []byte("server-timing: app;dur=")
	resultKey = []byte(`"result":"`)
)

func (c *conn) roundTrip(req []byte) (code int, server time.Duration, result string, err error) {
	if _, err := c.c.Write(req); err != nil {
		return 0, 0, "", err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, 0, "", err
	}
	if len(line) < 12 {
		return 0, 0, "", fmt.Errorf("bad status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, "", fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, 0, "", err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		lower := bytes.ToLower(h)
		if v, ok := bytes.CutPrefix(lower, hdrLength); ok {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		} else if v, ok := bytes.CutPrefix(lower, hdrTiming); ok {
			if f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64); err == nil {
				server = time.Duration(f * 1e6)
			}
		}
	}
	if length < 0 {
		return 0, 0, "", fmt.Errorf("no Content-Length (the server chunked an answer)")
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return 0, 0, "", err
	}
	if i := bytes.Index(c.body, resultKey); i >= 0 {
		rest := c.body[i+len(resultKey):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			result = string(rest[:j])
		}
	}
	return code, server, result, nil
}

// runqueueWait is how long pid's threads have waited for a CPU while
// runnable (/proc/<pid>/task/*/schedstat, second field; Linux): over a drive,
// the part of the latency that is the machine's other work, not the code.
func runqueueWait(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			total += time.Duration(n)
		}
	}
	return total
}
