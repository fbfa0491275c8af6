package clustertest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// repoRoot is the workspace root (the directory holding go.work).
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == "off" {
		t.Fatalf("go env GOWORK: %v (run inside the workspace)", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// natsServerBin is the nats-server the Makefile builds from the version the
// workspace pins (make bin/nats-server), or $OPTOUT_NATS_SERVER.
func natsServerBin(t *testing.T, root string) string {
	t.Helper()
	p := os.Getenv("OPTOUT_NATS_SERVER")
	if p == "" {
		p = filepath.Join(root, "bin", "nats-server")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nats-server %s: %v (run make bin/nats-server, or set OPTOUT_NATS_SERVER)", p, err)
	}
	return p
}

// build compiles a main package of the workspace into dir.
func build(t *testing.T, root, dir, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// freePort returns a loopback port nothing listens on now. A port is kept
// for a process's whole life: a restarted nats-server must come back where
// its routes and clients look for it.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is one child process, restartable with the same command line; its
// output goes to a log file that survives restarts and is shown when the
// test fails.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

// procs are every process a test started, stopped at cleanup whatever
// happens (a failed assertion, a panic).
type procs struct {
	t  *testing.T
	mu sync.Mutex
	ps []*proc
}

func newProcs(t *testing.T) *procs {
	ps := &procs{t: t}
	t.Cleanup(func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		keep := os.Getenv("OPTOUT_CLUSTER_LOGS")
		for _, p := range ps.ps {
			p.kill()
			if t.Failed() {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.tail(3000))
			}
			if keep != "" {
				// CI keeps the whole logs as artifacts.
				if b, err := os.ReadFile(p.log); err == nil {
					_ = os.MkdirAll(keep, 0o755)
					_ = os.WriteFile(filepath.Join(keep, strings.ReplaceAll(p.name, " ", "-")+".log"), b, 0o644)
				}
			}
		}
	})
	return ps
}

func (ps *procs) add(name, bin, logPath string, env []string, args ...string) *proc {
	p := &proc{name: name, bin: bin, args: args, env: env, log: logPath}
	ps.mu.Lock()
	ps.ps = append(ps.ps, p)
	ps.mu.Unlock()
	return p
}

// start starts (or restarts) the process.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.name, err)
	}
	fmt.Fprintf(f, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
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
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited()
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits for the
// process to be gone.
func (p *proc) kill() {
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

// stop sends SIGTERM, as Kubernetes does, and returns the exit status; a
// process that does not exit within limit is killed and that is an error.
func (p *proc) stop(limit time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", p.name)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(limit):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, limit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitErr != nil {
		return fmt.Errorf("%s exited: %w", p.name, p.exitErr)
	}
	return nil
}

// exitStatus says how the process ended ("running" while it runs).
func (p *proc) exitStatus() string {
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

// tail is the end of the process's log.
func (p *proc) tail(n int64) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// poll calls cond every interval until it holds, ctx ends or within
// passes; it returns the last error of cond. Each call gets its own
// deadline: a request to a cluster in the middle of a failover can go
// unanswered, and must not hold the test until its overall deadline.
func poll(ctx context.Context, within, interval time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, attemptLimit)
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

// attemptLimit bounds one attempt of a poll.
const attemptLimit = 10 * time.Second

// httpOK answers nil when url answers 200.
func httpOK(ctx context.Context, url string) error {
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
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// redisServer is the test's own redis-server, which it may kill and
// restart without touching the machine's Redis other engineers use.
type redisServer struct {
	*proc
	addr string
}

func startRedis(t *testing.T, ps *procs, dir string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server: %v (apt-get install redis-server)", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	// No persistence: a restart loses every key (the lease and the fence
	// counter), the harshest restart the lease must survive.
	r.proc = ps.add("redis-server", bin, filepath.Join(dir, "redis.log"), []string{"PATH=" + os.Getenv("PATH")},
		"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := r.restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// restart starts redis-server and waits until it answers PING.
func (r *redisServer) restart(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	if err := poll(ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }); err != nil {
		return fmt.Errorf("redis-server on %s: %w", r.addr, err)
	}
	return nil
}
