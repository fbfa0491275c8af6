package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// Namespace provisions the production topology under a namespace of its
// own (prefix and a random suffix), in memory with one replica, as a
// benchmark wants it on a shared server; remove tears it down.
func Namespace(ctx context.Context, nc *nats.Conn, prefix string) (prov *natsx.Provisioned, remove func(), err error) {
	topo := natsx.DefaultTopology()
	topo.Namespace = fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%1_000_000)
	topo.Storage = jetstream.MemoryStorage
	topo.Replicas = 1
	prov, err = natsx.Provision(ctx, nc, topo)
	if err != nil {
		return nil, nil, fmt.Errorf("provision namespace %s: %w", topo.Namespace, err)
	}
	return prov, func() {
		tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = natsx.Teardown(tctx, nc, topo)
	}, nil
}
