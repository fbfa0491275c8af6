package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench-pusher:", err)
		os.Exit(1)
	}
}

// run parses the flags and runs the benchmark, or, with -publisher, the
// publisher process the benchmark starts (this same binary run again).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench-pusher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench/pusher.md", "report file")
	bin := fs.String("bin", "bin", "directory holding nats-server, pusher and sfsandbox")
	total := fs.Int("total", 100_000, "opt-outs in the burst")
	trickle := fs.Duration("trickle", 30*time.Second, "length of the trickle")
	iso := fs.Int("iso-tenants", 1000, "tenants in the slow-tenant run")
	isoDur := fs.Duration("iso", 20*time.Second, "length of each slow-tenant phase")
	isoSmall := fs.Int("iso-small", 200, "tenants in the second, smaller slow-tenant run (negative: skip)")
	syncAlways := fs.Bool("sync-always", false, "run nats-server with sync_interval: always")
	keep := fs.Bool("keep", false, "keep the run directory (logs, profiles)")
	isoOnly := fs.Bool("iso-only", false, "run only the slow-tenant scenario")
	var env stringList
	fs.Var(&env, "pusher-env", "NAME=value added to the pusher's environment (repeatable)")
	publisher := fs.String("publisher", "", "internal: run as the benchmark's publisher process with this spec")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *publisher != "" {
		return Publish(ctx, *publisher, stdout)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return Run(ctx, Options{Out: *out, Bin: *bin, Self: self, Total: *total,
		TrickleDuration: *trickle, IsoTenants: *iso, IsoSmall: *isoSmall, IsoDuration: *isoDur, SyncAlways: *syncAlways,
		PusherEnv: env, Keep: *keep, SkipMain: *isoOnly})
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
