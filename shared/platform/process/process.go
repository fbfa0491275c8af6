// Package process starts what every optout-sync service needs before its own
// work: telemetry, a NATS connection with the topology provisioned, the live
// tenant-settings cache and the admin server with a NATS readiness check. It
// closes them in reverse order.
package process

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/platform/adminhttp"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Process holds the shared dependencies of one service replica.
type Process struct {
	Tel      *telemetry.Providers
	NC       *nats.Conn
	Prov     *natsx.Provisioned
	Settings *tenant.Cache
	Admin    *adminhttp.Server
	closers  []func()
}

// Start sets everything up for service name; on error what was started is
// closed again.
func Start(ctx context.Context, name string, natsCfg natsx.ConnConfig, topo natsx.Topology, adminAddr string, log zerolog.Logger) (_ *Process, err error) {
	p := &Process{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.Tel, err = telemetry.Setup(ctx, name); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	p.OnClose(func() {
		// Flush spans even when ctx is already cancelled by shutdown.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = p.Tel.Shutdown(sctx)
	})
	if p.NC, err = natsx.Connect(natsCfg, log); err != nil {
		return nil, err
	}
	p.OnClose(p.NC.Close)
	if p.Prov, err = natsx.Provision(ctx, p.NC, topo); err != nil {
		return nil, err
	}
	if p.Settings, err = tenant.Watch(ctx, p.Prov.Tenants); err != nil {
		return nil, err
	}
	p.Admin = adminhttp.New(adminAddr, p.Tel.Registry, adminhttp.Options{})
	p.Admin.AddCheck("nats", func(context.Context) error {
		if !p.NC.IsConnected() {
			return fmt.Errorf("nats not connected (%s)", p.NC.Status())
		}
		return nil
	})
	return p, nil
}

// OnClose registers f to run at Close, before what was registered earlier.
func (p *Process) OnClose(f func()) { p.closers = append(p.closers, f) }

// Close releases everything in reverse order of start.
func (p *Process) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}
