package recontest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
)

// PauseHook freezes a replica's Redis commands (its lease renewals) while
// Paused, ignoring their contexts, as a stopped process would. Add it to the
// replica's own client (ReplicaOpts.RDB).
type PauseHook struct {
	Paused atomic.Bool
	gate   chan struct{}
	once   sync.Once
}

// NewPauseHook returns a hook not yet paused.
func NewPauseHook() *PauseHook { return &PauseHook{gate: make(chan struct{})} }

func (p *PauseHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *PauseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if p.Paused.Load() {
			<-p.gate
		}
		return next(ctx, cmd)
	}
}
func (p *PauseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Resume lets the frozen commands go (idempotent).
func (p *PauseHook) Resume() { p.once.Do(func() { p.Paused.Store(false); close(p.gate) }) }

// StopAt gives engine hooks that block a run the n-th time it reaches point
// until Let, and report on Interrupted, when the attempt stops unfinished,
// whether the run still believed it held its lease then.
type StopAt struct {
	point       string
	n           int
	hits        atomic.Int32
	Reached     chan struct{}
	release     chan struct{}
	once        sync.Once
	Interrupted chan bool // the lease context's state when the run stopped
}

// Let releases the run (idempotent, so a failing test's cleanup can too).
func (s *StopAt) Let() { s.once.Do(func() { close(s.release) }) }

// NewStopAt stops at the n-th time a run reaches point.
func NewStopAt(point string, n int) *StopAt {
	return &StopAt{point: point, n: n, Reached: make(chan struct{}), release: make(chan struct{}), Interrupted: make(chan bool, 1)}
}

// Hooks are the engine hooks to give the replica.
func (s *StopAt) Hooks() engine.Hooks {
	return engine.Hooks{At: func(ctx context.Context, point string) {
		switch {
		case point == s.point && int(s.hits.Add(1)) == s.n:
			close(s.Reached)
			<-s.release
		case point == "interrupted":
			select {
			case s.Interrupted <- ctx.Err() == nil:
			default:
			}
		}
	}}
}
