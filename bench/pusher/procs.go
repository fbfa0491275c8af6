package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/internal/harness"
)

// startProc starts bin with args and env (added to the bench's own), its
// output going to <dir>/<name>.log: each measured component runs in its own
// process, so its CPU and memory are its own.
func startProc(name, dir, bin string, args, env []string) (*harness.Proc, error) {
	p := &harness.Proc{Name: name, Bin: bin, Args: args, Env: append(os.Environ(), env...), Log: filepath.Join(dir, name+".log")}
	return p, p.Start()
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
