package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/internal/harness"
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
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proc is one child process (internal/harness), restartable with the same
// command line; its log survives restarts and is shown when the test fails.
type proc = harness.Proc

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
			p.Kill()
			if t.Failed() {
				t.Logf("--- %s log (tail) ---\n%s", p.Name, p.Tail(40))
			}
			if keep != "" {
				// CI keeps the whole logs as artifacts.
				if b, err := os.ReadFile(p.Log); err == nil {
					_ = os.MkdirAll(keep, 0o755)
					_ = os.WriteFile(filepath.Join(keep, strings.ReplaceAll(p.Name, " ", "-")+".log"), b, 0o644)
				}
			}
		}
	})
	return ps
}

func (ps *procs) add(name, bin, logPath string, env []string, args ...string) *proc {
	p := &proc{Name: name, Bin: bin, Args: args, Env: env, Log: logPath}
	ps.mu.Lock()
	ps.ps = append(ps.ps, p)
	ps.mu.Unlock()
	return p
}

// poll calls cond every interval until it holds, ctx ends or within
// passes (harness.Poll), each call within attemptLimit.
func poll(ctx context.Context, within, interval time.Duration, cond func(ctx context.Context) error) error {
	return harness.Poll(ctx, within, interval, attemptLimit, cond)
}

// attemptLimit bounds one attempt of a poll: a request to a cluster in the
// middle of a failover can go unanswered.
const attemptLimit = 10 * time.Second

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
	if err := r.Start(); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	if err := poll(ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }); err != nil {
		return fmt.Errorf("redis-server on %s: %w", r.addr, err)
	}
	return nil
}
