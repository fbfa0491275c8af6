package deploytest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"go.starlark.net/starlark"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// imagePrefix is the dev image repository (values-dev.yaml image.registry).
const imagePrefix = "optout-sync/"

// runTilt executes a Tiltfile with the recording builtins.
func runTilt(t testing.TB, main string, env map[string]string, args map[string]starlark.Value, overlay map[string]string) (*tiltRun, error) {
	t.Helper()
	r := &tiltRun{Root: repoRoot(t), Main: main, Env: env, Args: args, Overlay: overlay}
	if r.Env == nil {
		r.Env = map[string]string{}
	}
	return r, r.exec()
}

// tiltWorkload is a pod-running object Tilt would turn into a resource.
type tiltWorkload struct {
	Kind, Name, Source string
	Pod                corev1.PodSpec
	PodLabels          map[string]string
}

func (w tiltWorkload) containers() []corev1.Container {
	return append(slices.Clone(w.Pod.InitContainers), w.Pod.Containers...)
}

type tiltObjects struct {
	Workloads  []tiltWorkload
	Services   []*corev1.Service
	Secrets    []*corev1.Secret
	ConfigMaps []*corev1.ConfigMap
}

// objects decodes everything k8s_yaml received, strictly.
func (r *tiltRun) objects() (*tiltObjects, []string) {
	o := &tiltObjects{}
	var problems []string
	for _, d := range r.Docs {
		var tm typeMeta
		if err := yaml.Unmarshal([]byte(d.YAML), &tm); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", d.Source, err))
			continue
		}
		strict := func(v any) bool {
			if err := yaml.UnmarshalStrict([]byte(d.YAML), v); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s strict decode: %v", d.Source, tm.Kind, err))
				return false
			}
			return true
		}
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			var v appsv1.Deployment
			if strict(&v) {
				o.Workloads = append(o.Workloads, tiltWorkload{"Deployment", v.Name, d.Source, v.Spec.Template.Spec, v.Spec.Template.Labels})
			}
		case "batch/v1/Job":
			var v batchv1.Job
			if strict(&v) {
				o.Workloads = append(o.Workloads, tiltWorkload{"Job", v.Name, d.Source, v.Spec.Template.Spec, v.Spec.Template.Labels})
			}
		case "v1/Service":
			var v corev1.Service
			if strict(&v) {
				o.Services = append(o.Services, &v)
			}
		case "v1/Secret":
			var v corev1.Secret
			if strict(&v) {
				o.Secrets = append(o.Secrets, &v)
				if d.Source == "blob" {
					problems = append(problems, fmt.Sprintf("the chart rendered Secret %s", v.Name))
				}
			}
		case "v1/ConfigMap":
			var v corev1.ConfigMap
			if strict(&v) {
				o.ConfigMaps = append(o.ConfigMaps, &v)
			}
		case "v1/ServiceAccount", "policy/v1/PodDisruptionBudget", "autoscaling/v2/HorizontalPodAutoscaler", "monitoring.coreos.com/v1/ServiceMonitor":
			// The chart's own objects: TestHelmTemplate decodes them.
		default:
			problems = append(problems, fmt.Sprintf("%s: unexpected %s %s in the Tilt stack", d.Source, tm.APIVersion, tm.Kind))
		}
	}
	return o, problems
}

func (o *tiltObjects) workload(name string) *tiltWorkload {
	for i := range o.Workloads {
		if o.Workloads[i].Name == name {
			return &o.Workloads[i]
		}
	}
	return nil
}

func (o *tiltObjects) service(name string) *corev1.Service {
	for _, s := range o.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (o *tiltObjects) configMap(name string) *corev1.ConfigMap {
	for _, c := range o.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (o *tiltObjects) secret(name string) *corev1.Secret {
	for _, s := range o.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// imageRepo strips the tag or digest: Tilt matches a docker_build ref to
// the images of the YAML by repository.
func imageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

var goBuildOut = regexp.MustCompile(`go build .*-o\s+(\S+)\s+(\./services/[a-z0-9]+)`)

// checkTilt asserts what Tilt itself would refuse or get wrong, and what
// the issue asks of the Tiltfile.
func checkTilt(t testing.TB, r *tiltRun, prodImages bool) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	root := r.Root
	o, problems := r.objects()
	p = append(p, problems...)

	// The chart, with the dev values.
	if len(r.Helms) != 1 {
		add("helm() called %d times, want once (the chart)", len(r.Helms))
		return p
	}
	h := r.Helms[0]
	if h.Chart != filepath.Join(root, ChartDir) {
		add("helm() renders %s, want %s", h.Chart, ChartDir)
	}
	if !slices.Contains(h.Values, filepath.Join(root, ChartDir, "values-dev.yaml")) {
		add("helm() does not use values-dev.yaml: %v", h.Values)
	}
	liveSet := slices.Contains(h.Set, "containerSecurityContext.readOnlyRootFilesystem=false")
	if liveSet == prodImages {
		add("readOnlyRootFilesystem is relaxed = %v with prod images = %v: only live update needs a writable root", liveSet, prodImages)
	}

	// Every resource named in k8s_resource exists, once; deps resolve.
	names := map[string]bool{}
	for _, res := range r.Res {
		if res.Workload == "" || o.workload(res.Workload) == nil {
			add("k8s_resource(%q): no such workload in the YAML (Tilt would fail)", res.Workload)
		}
		if names[res.name()] {
			add("resource %q declared twice", res.name())
		}
		names[res.name()] = true
		if len(res.Labels) == 0 {
			add("resource %q has no labels", res.name())
		}
	}
	for _, w := range o.Workloads {
		if r.resource(w.Name) == nil && !slices.ContainsFunc(r.Res, func(x *tiltResource) bool { return x.Workload == w.Name }) {
			names[w.Name] = true // Tilt makes an unconfigured resource of it
		}
	}
	for _, l := range r.Locals {
		if names[l.Name] {
			add("local_resource %q clashes with another resource", l.Name)
		}
		names[l.Name] = true
		if len(l.Labels) == 0 {
			add("local_resource %q has no labels", l.Name)
		}
	}
	deps := map[string][]string{}
	for _, res := range r.Res {
		deps[res.name()] = res.ResourceDeps
	}
	for _, l := range r.Locals {
		deps[l.Name] = l.ResourceDeps
	}
	for n, ds := range deps {
		for _, d := range ds {
			if !names[d] {
				add("resource %q depends on unknown resource %q", n, d)
			}
		}
	}
	if cyc := findCycle(deps); cyc != "" {
		add("resource_deps cycle: %s", cyc)
	}

	// Images: each service built; every optout-sync image in the YAML has a
	// build; every build is used by a workload or as another build's base.
	used := map[string]bool{}
	for _, w := range o.Workloads {
		for _, c := range w.containers() {
			repo := imageRepo(c.Image)
			if r.build(repo) != nil {
				used[repo] = true
			} else if strings.HasPrefix(repo, imagePrefix) {
				add("%s %s: image %s is not built by the Tiltfile (the cluster would try to pull it)", w.Kind, w.Name, c.Image)
			}
		}
	}
	for _, b := range r.Builds {
		for _, other := range r.Builds {
			if regexp.MustCompile(`(?m)^FROM\s+` + regexp.QuoteMeta(b.Ref) + `(\s|$)`).MatchString(other.DockerfileContents) {
				used[b.Ref] = true
			}
		}
		if !used[b.Ref] {
			add("docker_build(%q) is used by no workload", b.Ref)
		}
		if b.Context != root {
			add("docker_build(%q): context %s, want the repository root", b.Ref, b.Context)
		}
		if b.Dockerfile != "" {
			if _, err := os.Stat(b.Dockerfile); err != nil {
				add("docker_build(%q): %v", b.Ref, err)
			}
		}
	}
	for _, svc := range Services {
		b := r.build(imagePrefix + svc)
		if b == nil {
			add("no docker_build for %s%s", imagePrefix, svc)
			continue
		}
		if prodImages {
			if want := filepath.Join(root, DockerfileOf(svc)); b.Dockerfile != want {
				add("prod images: %s builds %s, want %s", b.Ref, b.Dockerfile, want)
			} else if want == filepath.Join(root, SharedDockerfile) && b.BuildArgs["SERVICE"] != svc {
				add("prod images: %s builds %s with SERVICE=%q, want %q", b.Ref, want, b.BuildArgs["SERVICE"], svc)
			}
			continue
		}
		// Dev images: Dockerfile.dev (possibly under the restart wrapper)
		// with the locally compiled binary, synced on change.
		base := b
		if b.DockerfileContents != "" {
			base = r.build(b.Ref + "-base")
		}
		if base == nil || base.Dockerfile != filepath.Join(root, TiltDir, "Dockerfile.dev") || base.BuildArgs["SERVICE"] != svc {
			add("dev images: %s does not build tilt/Dockerfile.dev with SERVICE=%s", b.Ref, svc)
			continue
		}
		compile := r.compileFor(svc)
		if compile == nil {
			add("dev images: no local_resource compiles ./services/%s", svc)
			continue
		}
		if err := isMainPackage(filepath.Join(root, "services", svc)); err != nil {
			add("%v", err)
		}
		m := goBuildOut.FindStringSubmatch(compile.Cmd)
		binary := filepath.Join(compile.Dir, m[1])
		if !strings.Contains(compile.Cmd, "CGO_ENABLED=0 GOOS=linux go build") {
			add("%s: %q is not CGO_ENABLED=0 GOOS=linux go build", compile.Name, compile.Cmd)
		}
		if compile.Dir != root {
			add("%s runs in %s, want the repository root", compile.Name, compile.Dir)
		}
		var watched []string
		for _, d := range compile.Deps {
			if rel, err := filepath.Rel(root, d); err == nil {
				watched = append(watched, filepath.ToSlash(rel))
			}
		}
		for _, f := range []string{"go.work", "go.mod"} {
			if !slices.Contains(watched, f) {
				add("%s does not watch %s: a change there would not rebuild", compile.Name, f)
			}
		}
		for _, d := range workspaceDeps(root, "./services/"+svc) {
			if !underAnyDir(d, watched) {
				add("%s does not watch %s: a change there would not rebuild", compile.Name, d)
			}
		}
		if !slices.ContainsFunc(base.Only, func(o string) bool { return filepath.Join(base.Context, o) == binary }) {
			add("%s: only=%v does not ship the compiled %s", base.Ref, base.Only, binary)
		}
		w := r.workloadUsing(o, b.Ref)
		if w == nil {
			continue
		}
		res := r.resourceFor(w.Name)
		if res == nil || !slices.Contains(res.ResourceDeps, compile.Name) {
			add("the resource of %s does not wait for %s: its first image build would miss the binary", w.Name, compile.Name)
		}
		if w.Kind == "Job" {
			continue
		}
		if len(b.LiveUpdate) == 0 {
			add("%s has no live_update", b.Ref)
		}
		synced := false
		for _, s := range b.LiveUpdate {
			if s.Kind == "sync" && s.Local == binary {
				synced = true
				if len(b.Entrypoint) == 0 || b.Entrypoint[len(b.Entrypoint)-1] != s.Remote {
					add("%s: live update syncs to %s but runs %v", b.Ref, s.Remote, b.Entrypoint)
				}
				for _, c := range w.Pod.Containers {
					if imageRepo(c.Image) == b.Ref && (c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || *c.SecurityContext.ReadOnlyRootFilesystem) {
						add("%s: live update writes %s but the root filesystem is read-only", w.Name, s.Remote)
					}
				}
			}
		}
		if !synced {
			add("%s: live update does not sync the compiled binary %s", b.Ref, binary)
		}
		if last := b.LiveUpdate[len(b.LiveUpdate)-1]; last.Kind != "run" || !strings.Contains(last.Cmd, ".restart-proc") {
			add("%s: live update does not restart the process", b.Ref)
		}
	}

	// Port forwards: Jaeger's UI on 16686 and the admin page; each forward
	// reaches a port of the workload's containers.
	for _, res := range r.Res {
		w := o.workload(res.Workload)
		if w == nil {
			continue
		}
		for _, pf := range res.PortForwards {
			found := false
			for _, c := range w.Pod.Containers {
				for _, cp := range c.Ports {
					if int(cp.ContainerPort) == pf.Container {
						found = true
					}
				}
			}
			if !found {
				add("resource %s forwards to port %d, which its containers do not expose", res.name(), pf.Container)
			}
		}
	}
	locals := map[int]string{}
	for _, res := range r.Res {
		for _, pf := range res.PortForwards {
			if prev, dup := locals[pf.Local]; dup {
				add("local port %d forwarded by %s and %s", pf.Local, prev, res.name())
			}
			locals[pf.Local] = res.name()
		}
	}
	jaeger := o.workload("jaeger")
	if jaeger == nil || !strings.HasPrefix(jaeger.Pod.Containers[0].Image, "jaegertracing/jaeger:2.") {
		add("no Jaeger all-in-one (jaegertracing/jaeger:2.x) Deployment")
	} else if res := r.resourceFor("jaeger"); res == nil || !slices.ContainsFunc(res.PortForwards, func(pf portForward) bool { return pf.Local == 16686 && pf.Container == 16686 }) {
		add("Jaeger's UI is not forwarded to localhost:16686")
	}
	admin := false
	if res := r.resourceFor(ReleaseName + "-admin"); res != nil {
		for _, pf := range res.PortForwards {
			if pf.Container == 9090 && pf.LinkPath == "/admin/" {
				admin = true
			}
		}
	}
	if !admin {
		add("the admin page (admin service port 9090, /admin/) is not forwarded")
	}

	// NATS with JetStream, durable (sync_interval: always), Redis.
	p = append(p, checkNATS(t, o)...)
	if o.workload("redis") == nil {
		add("no Redis Deployment")
	}

	// The dev values point at those Services, and the Secrets they name exist.
	vals := h.Rendered.Values
	dial := func(what, raw string, defPort int) {
		u, err := url.Parse(strings.Split(raw, ",")[0])
		if err != nil {
			add("%s %q: %v", what, raw, err)
			return
		}
		port := defPort
		if u.Port() != "" {
			port, _ = strconv.Atoi(u.Port())
		}
		s := o.service(u.Hostname())
		if s == nil || !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == port }) {
			add("%s %s: no Service %s with port %d in the Tilt stack", what, raw, u.Hostname(), port)
		}
	}
	str := func(p string) string { v, _ := vals.PathValue(p); s, _ := v.(string); return s }
	dial("nats.url", str("nats.url"), 4222)
	dial("redis.url", str("redis.url"), 6379)
	dial("otel.endpoint", str("otel.endpoint"), 4317)
	for name := range existingSecrets(vals) {
		if o.secret(name) == nil {
			add("values-dev.yaml names Secret %s, which the Tilt stack does not create", name)
		}
	}
	sandboxOrgs := map[string]string{} // org name → its own port
	if orgs, err := vals.PathValue("sfsandbox.orgs"); err == nil {
		for _, x := range orgs.([]any) {
			org := x.(map[string]any)
			sandboxOrgs[org["name"].(string)] = fmt.Sprint(org["port"])
		}
	}
	if tenants, err := vals.PathValue("salesforce.tenants"); err == nil {
		for _, x := range tenants.([]any) {
			tn := x.(map[string]any)
			s := o.secret(tn["existingSecret"].(string))
			if s == nil {
				continue
			}
			for _, k := range []string{"token_url", "client_id", "client_secret"} {
				if s.StringData[k] == "" && len(s.Data[k]) == 0 {
					add("Secret %s lacks %s", s.Name, k)
				}
			}
			u, err := url.Parse(s.StringData["token_url"])
			// Each org is its own origin (no path), as a real org's My Domain.
			if port, known := sandboxOrgs[tn["name"].(string)]; err != nil || o.service(u.Hostname()) == nil || u.Path != "" || !known || u.Port() != port {
				add("Secret %s: token_url %q is not the origin of the emulator's org %s (port %s)", s.Name, s.StringData["token_url"], tn["name"], port)
			} else if svc := o.service(u.Hostname()); !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == int32(mustAtoi(u.Port())) }) {
				add("Secret %s: token_url port %s is not a port of Service %s", s.Name, u.Port(), svc.Name)
			}
			if want := "sandbox-" + tn["name"].(string) + "-client-id"; s.StringData["client_id"] != want {
				add("Secret %s: client_id %q, the emulator's default is %q", s.Name, s.StringData["client_id"], want)
			}
		}
	}
	if s := o.secret(str("admin.auth.existingSecret")); s != nil && len(s.StringData[str("admin.auth.tokenKey")]) < 16 {
		add("admin token in %s is shorter than the 16 characters the admin service requires", s.Name)
	}
	if s := o.secret(str("admin.auth.existingSecret")); s != nil {
		// The page refuses a users file with a short password: the dev login must work.
		for n, line := range strings.Split(strings.TrimSpace(s.StringData[str("admin.auth.usersKey")]), "\n") {
			if _, pw, ok := strings.Cut(strings.TrimSpace(line), ":"); !ok || len(pw) < 16 {
				add("admin users in %s, line %d: want name:password with a password of at least 16 characters", s.Name, n+1)
			}
		}
	}

	// The Tilt stack's own manifests follow the chart's security rules.
	for _, w := range o.Workloads {
		if w.Source == "blob" {
			continue // the chart's: TestHelmTemplate
		}
		psc := w.Pod.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
			add("%s %s: no pod securityContext", w.Kind, w.Name)
		}
		for _, c := range w.containers() {
			sc := c.SecurityContext
			if sc != nil && sc.SeccompProfile == nil {
				sc = sc.DeepCopy()
				sc.SeccompProfile = psc.SeccompProfile
			}
			problems := []string{}
			checkContainerSecurity(w.Name+"/"+c.Name, sc, psc, func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
			checkResources(w.Name+"/"+c.Name, c.Resources, func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
			p = append(p, problems...)
		}
	}
	return p
}

func mustAtoi(s string) int { n, _ := strconv.Atoi(s); return n }

func (r *tiltRun) compileFor(svc string) *tiltLocal {
	for _, l := range r.Locals {
		if m := goBuildOut.FindStringSubmatch(l.Cmd); m != nil && m[2] == "./services/"+svc {
			return l
		}
	}
	return nil
}

func (r *tiltRun) workloadUsing(o *tiltObjects, ref string) *tiltWorkload {
	for i, w := range o.Workloads {
		for _, c := range w.containers() {
			if imageRepo(c.Image) == ref {
				return &o.Workloads[i]
			}
		}
	}
	return nil
}

func (r *tiltRun) resourceFor(workload string) *tiltResource {
	for _, res := range r.Res {
		if res.Workload == workload {
			return res
		}
	}
	return nil
}

func findCycle(deps map[string][]string) string {
	state := map[string]int{}
	var stack []string
	var visit func(string) string
	visit = func(n string) string {
		switch state[n] {
		case 1:
			return strings.Join(append(stack, n), " -> ")
		case 2:
			return ""
		}
		state[n] = 1
		stack = append(stack, n)
		for _, d := range deps[n] {
			if c := visit(d); c != "" {
				return c
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
		return ""
	}
	for n := range deps {
		if c := visit(n); c != "" {
			return c
		}
	}
	return ""
}

// TestTiltfile runs the Tiltfile as `tilt up` would (from the root
// Tiltfile, which includes tilt/Tiltfile), in both image modes.
func TestTiltfile(t *testing.T) {
	root := repoRoot(t)
	modes := []struct {
		name string
		env  map[string]string
		args map[string]starlark.Value
		prod bool
	}{
		{"dev images", nil, nil, false},
		{"prod images by flag", nil, map[string]starlark.Value{"prod-images": starlark.True}, true},
		{"prod images by environment", map[string]string{"OPTOUT_TILT_PROD_IMAGES": "1"}, nil, true},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			r, err := runTilt(t, filepath.Join(root, "Tiltfile"), m.env, m.args, nil)
			if err != nil {
				t.Fatal(starlarkError(err))
			}
			if !slices.Contains(r.Files, filepath.Join(root, TiltDir, "Tiltfile")) {
				t.Fatalf("the root Tiltfile does not run tilt/Tiltfile: %v", r.Files)
			}
			for _, p := range checkTilt(t, r, m.prod) {
				t.Error(p)
			}
			// Loading tilt/Tiltfile directly declares the same.
			direct, err := runTilt(t, filepath.Join(root, TiltDir, "Tiltfile"), m.env, m.args, nil)
			if err != nil {
				t.Fatal(starlarkError(err))
			}
			if got, want := summary(direct), summary(r); got != want {
				t.Errorf("tilt/Tiltfile alone declares\n%s\nbut through the root Tiltfile\n%s", got, want)
			}
			t.Logf("declared:\n%s", summary(r))
		})
	}
}

func summary(r *tiltRun) string {
	var b strings.Builder
	for _, x := range r.Builds {
		fmt.Fprintf(&b, "build %s %s%s live=%d\n", x.Ref, strings.TrimPrefix(x.Dockerfile, r.Root+"/"), map[bool]string{true: " (restart wrapper)"}[x.DockerfileContents != ""], len(x.LiveUpdate))
	}
	for _, h := range r.Helms {
		fmt.Fprintf(&b, "helm %s %v set=%v\n", strings.TrimPrefix(h.Chart, r.Root+"/"), len(h.Values), h.Set)
	}
	for _, res := range r.Res {
		fmt.Fprintf(&b, "k8s_resource %s (%s) forwards=%v deps=%v labels=%v\n", res.name(), res.Workload, res.PortForwards, res.ResourceDeps, res.Labels)
	}
	for _, l := range r.Locals {
		fmt.Fprintf(&b, "local_resource %s deps=%d resource_deps=%v labels=%v\n", l.Name, len(l.Deps), l.ResourceDeps, l.Labels)
	}
	fmt.Fprintf(&b, "yaml documents: %d\n", len(r.Docs))
	return b.String()
}

func starlarkError(err error) string {
	if ee, ok := err.(*starlark.EvalError); ok {
		return ee.Backtrace()
	}
	return err.Error()
}

// TestTiltChecksCatchMistakes breaks the Tiltfile in memory: the fake
// refuses what Tilt refuses and the checks notice what would not work.
func TestTiltChecksCatchMistakes(t *testing.T) {
	root := repoRoot(t)
	tiltfile := filepath.Join(root, TiltDir, "Tiltfile")
	orig, err := os.ReadFile(tiltfile)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, old, new, want string }{
		{"Jaeger UI not forwarded", "port_forwards=[port_forward(16686, 16686, name='Jaeger UI')], ", "", "16686"},
		{"a misspelt keyword", "port_forwards=['14222:4222', '18222:8222']", "port_forward=['14222:4222']", "unexpected keyword argument"},
		{"a workload that does not exist", "k8s_resource('redis', labels=['infra'])", "k8s_resource('redis-master', labels=['infra'])", "no such workload"},
		{"an image never built", "IMAGE_PREFIX = 'optout-sync/'", "IMAGE_PREFIX = 'optoutsync/'", "is not built by the Tiltfile"},
		{"a dependency on nothing", "resource_deps=compile_deps['reconciler'] + ['nats', 'redis', 'jaeger', 'sfsandbox']", "resource_deps=['natz']", "unknown resource"},
		{"live update into a read-only root", "    chart_set = ['containerSecurityContext.readOnlyRootFilesystem=false']\n", "    pass\n", "root filesystem is read-only"},
		{"compile not watching shared/", "'shared', 'services/pusher'", "'services/pusher'", "does not watch shared"},
		{"a command at load time", "cfg = config.parse()", "cfg = config.parse()\nlocal('make build')", "local() runs a command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(string(orig), c.old) {
				t.Fatalf("tilt/Tiltfile no longer contains %q: update this case", c.old)
			}
			overlay := map[string]string{tiltfile: strings.Replace(string(orig), c.old, c.new, 1)}
			r, err := runTilt(t, tiltfile, nil, nil, overlay)
			var problems []string
			if err != nil {
				problems = []string{starlarkError(err)}
			} else {
				problems = checkTilt(t, r, false)
			}
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("missed (want %q): %q", c.want, problems)
		})
	}
}

// TestTiltDevImageMatchesChart: the dev image's user owns /app (where live
// update writes), and it is the user the chart runs as.
func TestTiltDevImageMatchesChart(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, TiltDir, "Dockerfile.dev"))
	if err != nil {
		t.Fatal(err)
	}
	df := parseDockerfileData(t, "dev", "tilt/Dockerfile.dev", data)
	var user, chown string
	for _, c := range df.Stages[len(df.Stages)-1].Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CopyCommand:
			if slices.ContainsFunc(c.SourcePaths, func(s string) bool { return strings.HasPrefix(s, "build/linux/") }) {
				chown = c.Chown
			}
		}
	}
	vals, err := userValues([]string{filepath.Join(root, ChartDir, "values.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	psc := vals["podSecurityContext"].(map[string]any)
	want := fmt.Sprintf("%v:%v", psc["runAsUser"], psc["runAsGroup"])
	if user != want || chown != want {
		t.Errorf("Dockerfile.dev USER %q, COPY --chown=%q; the chart runs as %s", user, chown, want)
	}
}
