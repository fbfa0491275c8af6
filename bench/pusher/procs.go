package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process of the bench: each measured component runs in
// its own, so its CPU and memory are its own.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// startProc starts bin with args and env (added to the bench's own), its
// output going to <dir>/<name>.log.
func startProc(name, dir, bin string, args, env []string) (*proc, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C of `make` reaches the bench, which
	// then stops its children in order instead of all dying at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.log.Close()
}

// exited reports an early exit, with the tail of the log.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v; log: %s", p.name, p.err, tail(p.log.Name(), 20))
	default:
		return nil
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// freePort is a port nothing listens on now (the child binds it next).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url until it answers 200, the process exits or limit passes.
func waitHTTP(ctx context.Context, p *proc, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if err := p.exited(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready after %s; log: %s", p.name, url, limit, tail(p.log.Name(), 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cpuTime is a process's user+system CPU so far (/proc/<pid>/stat).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// USER_HZ is 100 on every Linux this runs on (sysconf is not in syscall).
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// memKB is a process's VmRSS and VmHWM (peak) in kB.
func memKB(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// rssSampler samples a process's VmRSS every 100 ms until stopped.
type rssSampler struct {
	stopc chan struct{}
	done  chan struct{}
	max   int64
	last  int64
	n     int
	sum   int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _ := memKB(pid); rss > 0 {
				s.last = rss
				s.max = max(s.max, rss)
				s.sum += rss
				s.n++
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak, mean and last VmRSS in kB.
func (s *rssSampler) stop() (peak, mean, last int64) {
	close(s.stopc)
	<-s.done
	if s.n > 0 {
		mean = s.sum / int64(s.n)
	}
	return s.max, mean, s.last
}

// cpuWindow records each named process's CPU time over a window.
type cpuWindow struct {
	start time.Time
	pids  map[string]int
	cpu0  map[string]time.Duration
}

func startCPU(pids map[string]int) *cpuWindow {
	w := &cpuWindow{start: time.Now(), pids: pids, cpu0: map[string]time.Duration{}}
	for name, pid := range pids {
		w.cpu0[name], _ = cpuTime(pid)
	}
	return w
}

// cpuUse is one process's CPU over a window.
type cpuUse struct {
	Name  string
	CPU   time.Duration
	Cores float64 // CPU seconds per wall second
}

func (w *cpuWindow) end(names []string) []cpuUse {
	wall := time.Since(w.start)
	var out []cpuUse
	for _, name := range names {
		c, err := cpuTime(w.pids[name])
		if err != nil {
			continue
		}
		d := c - w.cpu0[name]
		out = append(out, cpuUse{Name: name, CPU: d, Cores: d.Seconds() / wall.Seconds()})
	}
	return out
}
