// Package harness starts the project's processes for the tools and tests
// that run them as production does (the benchmarks in bench/, the cluster
// test): a child process with its own log, restartable, stopped as
// Kubernetes stops it or killed as a crash would, and the waits around it.
// It imports nothing but the standard library.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process, restartable with the same command line. Its
// output goes to the file Log, appended to across restarts, so it survives
// the process for a failure's reader.
type Proc struct {
	Name string
	Bin  string
	Args []string
	Env  []string // the whole environment of the process
	Log  string   // path of its log file

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

// Start starts (or restarts) the process.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is already running", p.Name)
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.Name, err)
	}
	fmt.Fprintf(f, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.Name)
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// exited reports whether the current process ended (p.mu held).
func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited()
}

// Pid is the current process's id (0 before the first start).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited is nil while the process runs, else how it ended with the end of
// its log.
func (p *Proc) Exited() error {
	if p.Running() {
		return nil
	}
	return fmt.Errorf("%s exited: %s; log: %s", p.Name, p.ExitStatus(), p.Tail(20))
}

// Kill sends SIGKILL, as a crash or an OOM kill would, and waits for the
// process to be gone.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Stop sends SIGTERM, as Kubernetes does, and returns the exit status; a
// process that does not exit within limit is killed and that is an error.
func (p *Proc) Stop(limit time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", p.Name)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(limit):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, limit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitErr != nil {
		return fmt.Errorf("%s exited: %w", p.Name, p.exitErr)
	}
	return nil
}

// ExitStatus says how the process ended ("running" while it runs).
func (p *Proc) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.cmd == nil:
		return "never started"
	case !p.exited():
		return "running"
	case p.exitErr != nil:
		return p.exitErr.Error()
	}
	return "exit status 0"
}

// Tail is the last lines of the process's log (of its last 64 KiB).
func (p *Proc) Tail(lines int) string {
	f, err := os.Open(p.Log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	const most = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > most {
		_, _ = f.Seek(st.Size()-most, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// FreePort is a loopback port nothing listens on now (the child binds it
// next). A restarted process must be given the same port again.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Poll calls cond every interval until it holds, ctx ends or within
// passes; it returns the last error of cond. Each call gets its own
// deadline (attempt): a request to a cluster in the middle of a failover
// can go unanswered, and must not hold the caller until its overall
// deadline.
func Poll(ctx context.Context, within, interval, attempt time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, attempt)
		last = cond(actx)
		acancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", within, last)
		case <-time.After(interval):
		}
	}
}

// HTTPOK answers nil when url answers 200.
func HTTPOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// WaitHTTP waits until url answers 200, failing early when p exits.
func WaitHTTP(ctx context.Context, p *Proc, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if err := p.Exited(); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := HTTPOK(actx, url)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %w; log: %s", p.Name, within, err, p.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
