package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/internal/harness"
)

// natsNode is one nats-server process of the cluster. Its store directory
// and ports stay the same across restarts, as a pod's volume and service do.
type natsNode struct {
	*proc
	name                             string
	clientPort, clusterPort, monPort int
	storeDir                         string
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

// natsCluster is three separate nats-server processes on loopback.
type natsCluster struct {
	nodes []*natsNode
}

// clusterName is the JetStream cluster's name; Provision sees it and
// defaults every stream and bucket to 3 replicas.
const clusterName = "optout-cluster-test"

// startCluster writes each node's configuration and starts the three
// servers: file storage with sync_interval: always, the durable setting
// issue 12 makes the default for servers holding opt-outs.
func startCluster(t *testing.T, ps *procs, bin, dir string) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), clientPort: freePort(t), clusterPort: freePort(t), monPort: freePort(t)}
		n.storeDir = filepath.Join(dir, n.name, "store")
		c.nodes = append(c.nodes, n)
	}
	var routes []string
	for _, n := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.clusterPort))
	}
	for _, n := range c.nodes {
		if err := os.MkdirAll(n.storeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, n.name, "nats.conf")
		cfg := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  # fsync before every acknowledgement: Jepsen (NATS 2.12.1, 2025) showed
  # the default (flush every two minutes) loses acknowledged writes on an
  # OS crash or power failure.
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 8GB
}
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, n.name, n.clientPort, n.monPort, n.storeDir, clusterName, n.clusterPort, strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		n.proc = ps.add("nats-server "+n.name, bin, filepath.Join(dir, n.name, "nats.log"), nil, "-c", conf)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, n := range c.nodes {
		if err := n.waitHealthy(ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// urls is the client URL list every process is given, so a client of a
// killed server reconnects to another.
func (c *natsCluster) urls() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, n.url())
	}
	return strings.Join(us, ",")
}

func (c *natsCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// waitHealthy waits until the server's /healthz answers ok: it is up, has
// JetStream and (after a restart) every stream and consumer it holds a
// replica of has caught up.
func (n *natsNode) waitHealthy(ctx context.Context, within time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.monPort)
	if err := poll(ctx, within, 100*time.Millisecond, func(ctx context.Context) error { return harness.HTTPOK(ctx, url) }); err != nil {
		return fmt.Errorf("nats-server %s healthy: %w", n.name, err)
	}
	return nil
}

// syncAlways reads the JetStream configuration the running server reports,
// so the test proves the durable setting is in force, not just written.
func (n *natsNode) syncAlways(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/varz", n.monPort), nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("varz of %s: %w", n.name, err)
	}
	defer resp.Body.Close()
	var v struct {
		Version   string `json:"version"`
		JetStream struct {
			Config struct {
				SyncAlways bool `json:"sync_always"`
			} `json:"config"`
		} `json:"jetstream"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return false, fmt.Errorf("varz of %s: %w", n.name, err)
	}
	return v.JetStream.Config.SyncAlways, nil
}

// leaderOf is the server name leading a stream's replicas (a KV bucket is
// the stream KV_<bucket>).
func leaderOf(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader now", stream)
	}
	return info.Cluster.Leader, nil
}

// replicaState says how a stream is replicated now: its configured
// replicas, leader and followers that are current.
func replicaState(ctx context.Context, js jetstream.JetStream, stream string) (replicas int, leader string, current int, err error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, "", 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, "", 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info.Cluster != nil {
		leader = info.Cluster.Leader
		for _, p := range info.Cluster.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
	}
	return info.Config.Replicas, leader, current, nil
}
