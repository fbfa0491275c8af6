package deploytest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// containerEnv is the environment Kubernetes would give the container:
// envFrom ConfigMaps, then env in order with $(VAR) expanded. Secret
// values are stand-ins; files of Secret mounts are created under fsRoot and
// the paths rewritten to point there.
func containerEnv(t *testing.T, o *Objects, d *appsv1.Deployment, fsRoot string) map[string]string {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			for k, v := range o.ConfigMap(ef.ConfigMapRef.Name).Data {
				env[k] = v
			}
		}
	}
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if v, ok := env[ref[2:len(ref)-1]]; ok {
					return v
				}
				return ref // Kubernetes leaves unknown references as they are
			})
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "stand-in-secret-value"
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = map[string]string{"metadata.name": d.Name + "-5d8f-x2x9q", "metadata.namespace": TestNamespace}[e.ValueFrom.FieldRef.FieldPath]
		}
	}
	// Secret mounts: a stand-in file per item, under fsRoot.
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			dir := filepath.Join(fsRoot, m.MountPath)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			items := v.Secret.Items
			if len(items) == 0 {
				items = []corev1.KeyToPath{{Key: "token_url", Path: "token_url"}}
			}
			for _, it := range items {
				content := "stand-in " + it.Key
				switch it.Path {
				case "token":
					content = "stand-in-admin-token-0123456789"
				case "users":
					content = "ops:stand-in-password\n"
				case "key":
					content = "stand-in-email-hash-key-0123456789\n"
				}
				if err := os.WriteFile(filepath.Join(dir, it.Path), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for k, v := range env {
		if strings.HasPrefix(v, "/etc/optout/") {
			env[k] = filepath.Join(fsRoot, v)
		}
	}
	return env
}

// TestServicesAcceptRenderedConfig starts the real pusher, reconciler and admin service
// (built by replaying their Dockerfiles) with the environment each values
// set renders: the services validate every variable at start (exit 2 on a
// bad one) and set up telemetry before they dial NATS, so reaching "connect
// to nats" proves the chart's configuration is accepted. NATS_URL points
// at a closed port, so nothing is contacted.
func TestServicesAcceptRenderedConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service binaries")
	}
	dir := chartPath(t)
	for _, vf := range ValuesFiles {
		for _, svc := range []string{"pusher", "reconciler", "admin"} {
			t.Run(label(vf)+"/"+svc, func(t *testing.T) {
				t.Parallel()
				code, out, env := startRendered(t, dir, svc, valuesPaths(dir, vf), nil)
				if code == 2 || !strings.Contains(out, "connect to nats") {
					t.Fatalf("%s refused the rendered configuration (exit %d):\n%s\nenvironment:\n%s", svc, code, out, strings.Join(env, "\n"))
				}
			})
		}
	}
	t.Run("dev/sfsandbox", func(t *testing.T) {
		t.Parallel()
		checkSandboxServes(t, dir)
	})
	// The schema cannot bound durations; the service does, and this test sees it.
	t.Run("a value only the service refuses", func(t *testing.T) {
		t.Parallel()
		code, out, _ := startRendered(t, dir, "pusher", nil, []string{"pusher.config.OPTOUT_LINGER=10s"})
		if code != 2 || !strings.Contains(out, "OPTOUT_LINGER") {
			t.Fatalf("want exit 2 naming OPTOUT_LINGER, got %d:\n%s", code, out)
		}
	})
}

// startRendered runs a service's binary with the environment the chart
// renders for it and returns its exit code and output.
func startRendered(t *testing.T, dir, svc string, valueFiles, sets []string) (int, string, []string) {
	t.Helper()
	b := replayBuild(t, svc)
	if b.err != nil {
		t.Fatalf("build: %v", b.err)
	}
	r, err := renderChart(dir, TestNamespace, valueFiles, sets)
	if err != nil {
		t.Fatal(err)
	}
	o, problems := decodeObjects(r.Docs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	d := o.Deployment(ReleaseName + "-" + svc)
	env := containerEnv(t, o, d, t.TempDir())
	env["NATS_URL"] = "nats://127.0.0.1:1"
	env["OPTOUT_ADMIN_ADDR"] = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.binary)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out), cmd.Env
}

// checkSandboxServes runs the emulator with the orgs ConfigMap of the dev
// values and its probe path: it must load the orgs and answer the probe.
func checkSandboxServes(t *testing.T, dir string) {
	b := replayBuild(t, "sfsandbox")
	if b.err != nil {
		t.Fatalf("build: %v", b.err)
	}
	r, err := renderChart(dir, TestNamespace, valuesPaths(dir, "values-dev.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := decodeObjects(r.Docs)
	d := o.Deployment(ReleaseName + "-sfsandbox")
	orgsFile := filepath.Join(t.TempDir(), "orgs.yaml")
	if err := os.WriteFile(orgsFile, []byte(o.ConfigMap(ReleaseName + "-sfsandbox").Data["orgs.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	var args []string
	for _, a := range c.Args { // the chart's args, with a free port and the local orgs file
		switch {
		case strings.HasPrefix(a, "--listen="):
			args = append(args, "--listen=127.0.0.1:0")
		case strings.HasPrefix(a, "--orgs="):
			args = append(args, "--orgs="+orgsFile)
		default:
			args = append(args, a)
		}
	}
	args = append(args, "--free-org-ports") // the chart's org ports may be taken here
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// "control API http://127.0.0.1:PORT/_sandbox/orgs", then one
	// "org acme       token URL http://127.0.0.1:PORT/services/oauth2/token ..." per org.
	sc := bufio.NewScanner(stdout)
	var base string
	for sc.Scan() {
		if m := regexp.MustCompile(`^control API (http://[^/]+)/`).FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if base == "" {
		t.Fatalf("the emulator did not start with the chart's orgs:\n%s", stderr.String())
	}
	probe := c.ReadinessProbe.HTTPGet.Path
	var resp *http.Response
	for i := 0; i < 50; i++ {
		if resp, err = http.Get(base + probe); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("readiness probe %s: %v", probe, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readiness probe %s answered %d: %s", probe, resp.StatusCode, body)
	}
	var orgs []struct {
		Name    string `json:"name"`
		BaseURL string `json:"baseUrl"`
	}
	if err := yaml.Unmarshal(body, &orgs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, org := range orgs {
		got = append(got, org.Name)
		// Each org answers on its own origin.
		if resp, err := http.Get(org.BaseURL + "/services/data/"); err != nil || resp.StatusCode != 200 {
			t.Errorf("org %s: GET %s/services/data/: %v %v", org.Name, org.BaseURL, err, resp)
		} else {
			resp.Body.Close()
		}
	}
	tenants, _ := r.Values.PathValue("salesforce.tenants")
	for _, x := range tenants.([]any) {
		if name := x.(map[string]any)["name"].(string); !slices.Contains(got, name) {
			t.Errorf("dev tenant %s has no org in the emulator (orgs %v)", name, got)
		}
	}
}
