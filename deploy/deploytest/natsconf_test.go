package deploytest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
)

// natsOptions is the dev NATS server's configuration as nats-server itself
// reads it: the container's arguments, parsed by the server's own
// ConfigureOptions, with the config file they name taken from the ConfigMap
// mounted at that path (written under a temporary root first).
func natsOptions(t testing.TB, o *tiltObjects, w *tiltWorkload) (*server.Options, *corev1.Container, error) {
	t.Helper()
	i := slices.IndexFunc(w.Pod.Containers, func(c corev1.Container) bool { return c.Name == "nats" })
	if i < 0 {
		return nil, nil, fmt.Errorf("Deployment %s has no container named nats", w.Name)
	}
	c := &w.Pod.Containers[i]
	if len(c.Command) > 0 {
		// The image's entrypoint runs nats-server when the first argument is a flag.
		return nil, c, fmt.Errorf("nats container overrides the image's command (%v): the checks read only args", c.Command)
	}
	root := t.TempDir()
	mounts := map[string]string{} // container path → path under root
	for _, m := range c.VolumeMounts {
		vi := slices.IndexFunc(w.Pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if vi < 0 || w.Pod.Volumes[vi].ConfigMap == nil {
			continue
		}
		cm := o.configMap(w.Pod.Volumes[vi].ConfigMap.Name)
		if cm == nil {
			return nil, c, fmt.Errorf("volume %s mounts ConfigMap %s, which the Tilt stack does not create", m.Name, w.Pod.Volumes[vi].ConfigMap.Name)
		}
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, c, err
		}
		for k, v := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
				return nil, c, err
			}
		}
		mounts[m.MountPath] = dir
	}
	// Paths in the arguments point at the files written above.
	args := make([]string, len(c.Args))
	for j, a := range c.Args {
		args[j] = a
		for mp, dir := range mounts {
			if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(v, mp+"/") {
				args[j] = k + "=" + dir + strings.TrimPrefix(v, mp)
			} else if strings.HasPrefix(a, mp+"/") {
				args[j] = dir + strings.TrimPrefix(a, mp)
			}
		}
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	nop := func() {}
	opts, err := server.ConfigureOptions(fs, args, nop, nop, nop)
	if err != nil {
		return nil, c, fmt.Errorf("nats-server %v: %v", c.Args, err)
	}
	return opts, c, nil
}

// checkNATS asserts what the issue asks of the dev NATS: JetStream, storing
// on a writable volume, with sync_interval: always (fsync before every ack),
// on the ports its Service and probe use.
func checkNATS(t testing.TB, o *tiltObjects) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	w := o.workload("nats")
	if w == nil {
		return []string{"no NATS Deployment"}
	}
	opts, c, err := natsOptions(t, o, w)
	if err != nil {
		return []string{err.Error()}
	}
	if !opts.JetStream {
		add("the dev NATS runs without JetStream")
	}
	if !opts.SyncAlways {
		add("the dev NATS does not set sync_interval: always in its jetstream block (got %s): the default fsyncs every 2 minutes, after the ack, and loses acknowledged opt-outs on a power failure or OS crash (deploy/README.md)", opts.SyncInterval)
	}
	writable := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return !m.ReadOnly && opts.StoreDir != "" && (opts.StoreDir == m.MountPath || strings.HasPrefix(opts.StoreDir, m.MountPath+"/"))
	})
	if !writable {
		add("the dev NATS stores JetStream in %q, not on a writable volume (the root filesystem is read-only)", opts.StoreDir)
	}
	port := func(name string) int {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return int(cp.ContainerPort)
			}
		}
		return -1
	}
	clientPort := opts.Port
	if clientPort == 0 {
		clientPort = server.DEFAULT_PORT
	}
	if clientPort != port("client") {
		add("the dev NATS listens for clients on %d, its container port \"client\" is %d", clientPort, port("client"))
	}
	if opts.HTTPPort != port("monitor") {
		add("the dev NATS serves monitoring (its readiness probe) on %d, its container port \"monitor\" is %d", opts.HTTPPort, port("monitor"))
	}
	return p
}

// TestTiltNATSChecksCatchMistakes breaks the dev NATS manifest in memory:
// each mistake must be reported.
func TestTiltNATSChecksCatchMistakes(t *testing.T) {
	root := repoRoot(t)
	manifest := filepath.Join(root, TiltDir, "k8s", "nats.yaml")
	orig, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	const always = "      sync_interval: always\n"
	cases := []struct {
		name string
		edit []string // old, new, old, new, …
		want string
	}{
		{"no sync_interval", []string{always, ""}, "sync_interval: always"},
		{"a periodic sync_interval", []string{always, "      sync_interval: \"1s\"\n"}, "sync_interval: always"},
		// The server refuses the file: it would crash-loop, not run lazily.
		{"sync_interval outside the jetstream block", []string{always, "", "    server_name:", "    sync_interval: always\n    server_name:"}, `unknown field "sync_interval"`},
		{"the config file not mounted", []string{"            - name: config\n              mountPath: /etc/nats\n", ""}, "nats-server"},
		{"the store on the read-only root", []string{"store_dir: /data", "store_dir: /var/lib/nats"}, "not on a writable volume"},
		{"JetStream off", []string{"    jetstream {\n", "    jetstream {\n      enabled: false\n"}, "without JetStream"},
		{"monitoring off", []string{"    http_port: 8222\n", ""}, "serves monitoring"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			broken := string(orig)
			for i := 0; i < len(c.edit); i += 2 {
				if !strings.Contains(broken, c.edit[i]) {
					t.Fatalf("tilt/k8s/nats.yaml no longer contains %q: update this case", c.edit[i])
				}
				broken = strings.Replace(broken, c.edit[i], c.edit[i+1], 1)
			}
			r, err := runTilt(t, filepath.Join(root, "Tiltfile"), nil, nil, map[string]string{manifest: broken})
			if err != nil {
				t.Fatal(starlarkError(err))
			}
			o, _ := r.objects()
			problems := checkNATS(t, o)
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("missed (want %q): %q", c.want, problems)
		})
	}
}
