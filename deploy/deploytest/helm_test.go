package deploytest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/chart/loader"
)

func chartPath(t testing.TB) string { return filepath.Join(repoRoot(t), ChartDir) }

func label(name string) string {
	if name == "" {
		return "default"
	}
	return strings.TrimSuffix(strings.TrimPrefix(name, "values-"), ".yaml")
}

// TestHelmLintStrict is `helm lint --strict` with each values set.
func TestHelmLintStrict(t *testing.T) {
	dir := chartPath(t)
	for _, vf := range ValuesFiles {
		t.Run(label(vf), func(t *testing.T) {
			t.Parallel()
			msgs, err := lintChart(dir, TestNamespace, valuesPaths(dir, vf))
			for _, m := range msgs {
				t.Log(m)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// renderChecked renders with values files and checks every object against
// the chart-wide rules.
func renderChecked(t *testing.T, valueFiles []string, sets []string) (*Rendered, *Objects) {
	t.Helper()
	r, err := renderChart(chartPath(t), TestNamespace, valueFiles, sets)
	if err != nil {
		t.Fatal(err)
	}
	o, problems := decodeObjects(r.Docs)
	problems = append(problems, checkObjects(o, rulesFor(r))...)
	for _, p := range problems {
		t.Error(p)
	}
	if t.Failed() {
		t.Logf("manifest:\n%s", r.Manifest)
	}
	return r, o
}

func rulesFor(r *Rendered) rules {
	admin, _ := r.Values["admin"].(map[string]any)
	return rules{
		namespace:       TestNamespace,
		allowedSecrets:  existingSecrets(r.Values),
		adminPort:       int32(intValue(admin["port"])),
		adminComponents: []string{"pusher", "reconciler", "admin"},
	}
}

// TestHelmTemplate renders the chart with the default, production and dev
// values, decodes every object strictly and checks what each set promises.
func TestHelmTemplate(t *testing.T) {
	dir := chartPath(t)
	for _, vf := range ValuesFiles {
		t.Run(label(vf), func(t *testing.T) {
			t.Parallel()
			r, o := renderChecked(t, valuesPaths(dir, vf), nil)
			checkPromises(t, r, o)
			switch label(vf) {
			case "default":
				if len(existingSecrets(r.Values)) != 0 {
					t.Errorf("the default values name Secrets: %v", existingSecrets(r.Values))
				}
			case "prod":
				checkProd(t, r, o)
			case "dev":
				checkDev(t, r, o)
			}
		})
	}
}

// checkPromises holds for every values set: what values.yaml documents is
// what gets rendered.
func checkPromises(t *testing.T, r *Rendered, o *Objects) {
	t.Helper()
	v := r.Values
	get := func(p string) any {
		var cur any = map[string]any(v)
		for _, k := range strings.Split(p, ".") {
			m, _ := cur.(map[string]any)
			cur = m[k]
		}
		return cur
	}
	str := func(p string) string { s, _ := get(p).(string); return s }
	boolean := func(p string) bool { b, _ := get(p).(bool); return b }
	full := ReleaseName
	tag := str("image.tag")
	if tag == "" {
		ch, err := loader.Load(chartPath(t))
		if err != nil {
			t.Fatal(err)
		}
		tag = ch.Metadata.AppVersion
	}

	pusher, reconciler, adminSvc := o.Deployment(full+"-pusher"), o.Deployment(full+"-reconciler"), o.Deployment(full+"-admin")
	if pusher == nil || reconciler == nil || adminSvc == nil {
		t.Fatalf("pusher, reconciler or admin Deployment missing: %v", names(o))
	}
	if want := int32(intValue(get("reconciler.replicas"))); reconciler.Spec.Replicas == nil || *reconciler.Spec.Replicas != want {
		t.Errorf("reconciler replicas = %v, want %d", reconciler.Spec.Replicas, want)
	}
	if want := int32(intValue(get("admin.replicas"))); adminSvc.Spec.Replicas == nil || *adminSvc.Spec.Replicas != want {
		t.Errorf("admin replicas = %v, want %d", adminSvc.Spec.Replicas, want)
	}
	autoscaled := boolean("pusher.autoscaling.enabled")
	if autoscaled != (len(o.HPAs) == 1) {
		t.Errorf("pusher.autoscaling.enabled=%v but %d HPAs rendered", autoscaled, len(o.HPAs))
	}
	if !autoscaled {
		if want := int32(intValue(get("pusher.replicas"))); pusher.Spec.Replicas == nil || *pusher.Spec.Replicas != want {
			t.Errorf("pusher replicas = %v, want %d", pusher.Spec.Replicas, want)
		}
	} else if h := o.HPAs[0]; *h.Spec.MinReplicas != int32(intValue(get("pusher.autoscaling.minReplicas"))) {
		t.Errorf("HPA minReplicas = %d", *h.Spec.MinReplicas)
	}
	for _, c := range []string{"pusher", "reconciler"} {
		wantPDB := boolean(c + ".podDisruptionBudget.enabled")
		has := pdbFor(o, full+"-"+c)
		if wantPDB != has {
			t.Errorf("%s PDB rendered = %v, want %v", c, has, wantPDB)
		}
	}

	for _, d := range []*appsv1.Deployment{pusher, reconciler, adminSvc} {
		c := d.Spec.Template.Spec.Containers[0]
		comp := d.Spec.Template.Labels["app.kubernetes.io/component"]
		if want := str("image.registry") + "/" + comp + ":" + tag; c.Image != want {
			t.Errorf("%s image = %q, want %q", d.Name, c.Image, want)
		}
		env := envOf(c)
		cm := o.ConfigMap(d.Name)
		if cm == nil || len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != d.Name {
			t.Fatalf("%s does not read its ConfigMap %s", d.Name, d.Name)
		}
		if env["NATS_URL"].Value != str("nats.url") {
			t.Errorf("%s NATS_URL = %q, want %q", d.Name, env["NATS_URL"].Value, str("nats.url"))
		}
		if cm.Data["OPTOUT_ADMIN_ADDR"] != fmt.Sprintf(":%d", intValue(get("admin.port"))) {
			t.Errorf("%s OPTOUT_ADMIN_ADDR = %q", d.Name, cm.Data["OPTOUT_ADMIN_ADDR"])
		}
		if got, want := cm.Data["OTEL_EXPORTER_OTLP_ENDPOINT"], str("otel.endpoint"); got != want {
			t.Errorf("%s OTEL_EXPORTER_OTLP_ENDPOINT = %q, want %q", d.Name, got, want)
		}
		if ra := env["OTEL_RESOURCE_ATTRIBUTES"].Value; !strings.Contains(ra, "service.version="+tag) || !strings.Contains(ra, "k8s.pod.name=$(K8S_POD_NAME)") {
			t.Errorf("%s OTEL_RESOURCE_ATTRIBUTES = %q", d.Name, ra)
		}
		for k, want := range mapOf(get("config")) {
			if s := fmt.Sprint(want); s != "" && cm.Data[k] != s {
				t.Errorf("%s: config.%s = %q but the ConfigMap has %q", d.Name, k, s, cm.Data[k])
			}
		}
		for k, want := range mapOf(get(comp + ".config")) {
			if s := fmt.Sprint(want); s != "" && cm.Data[k] != s {
				t.Errorf("%s: %s.config.%s = %q but the ConfigMap has %q", d.Name, comp, k, s, cm.Data[k])
			}
		}
		// Each tenant's Secret at <credentialsDir>/<tenant>/, optional.
		dir := str("salesforce.credentialsDir")
		if cm.Data["OPTOUT_SF_CREDENTIALS_DIR"] != dir {
			t.Errorf("%s OPTOUT_SF_CREDENTIALS_DIR = %q, want %q", d.Name, cm.Data["OPTOUT_SF_CREDENTIALS_DIR"], dir)
		}
		tenants, _ := get("salesforce.tenants").([]any)
		for _, x := range tenants {
			tn := x.(map[string]any)
			vol, ok := mountedVolume(d, c, path.Join(dir, tn["name"].(string)))
			switch {
			case !ok || vol.Secret == nil:
				t.Errorf("%s: tenant %v is not mounted from a Secret at %s/%v", d.Name, tn["name"], dir, tn["name"])
			case vol.Secret.SecretName != tn["existingSecret"]:
				t.Errorf("%s: tenant %v mounts Secret %q, want %q", d.Name, tn["name"], vol.Secret.SecretName, tn["existingSecret"])
			case vol.Secret.Optional == nil || !*vol.Secret.Optional:
				t.Errorf("%s: tenant %v's Secret is not optional: one missing Secret would stop every tenant", d.Name, tn["name"])
			}
		}
		if got := countSFMounts(c, dir); got != len(tenants) {
			t.Errorf("%s: %d mounts under %s, want %d tenants", d.Name, got, dir, len(tenants))
		}
	}

	// The admin page's auth, from its Secret only, in the admin service
	// alone: the pusher serves no page.
	penv := envOf(pusher.Spec.Template.Spec.Containers[0])
	for _, v := range []string{"OPTOUT_ADMIN_TOKEN_FILE", "OPTOUT_ADMIN_USERS_FILE"} {
		if _, ok := penv[v]; ok {
			t.Errorf("the pusher gets %s; the page is the admin service's", v)
		}
	}
	if slices.ContainsFunc(pusher.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "admin-auth" }) {
		t.Error("the pusher mounts the admin login Secret; the page is the admin service's")
	}
	aenv := envOf(adminSvc.Spec.Template.Spec.Containers[0])
	if s := str("admin.auth.existingSecret"); s != "" {
		for key, envName := range map[string]string{str("admin.auth.tokenKey"): "OPTOUT_ADMIN_TOKEN_FILE", str("admin.auth.usersKey"): "OPTOUT_ADMIN_USERS_FILE"} {
			if key == "" {
				continue
			}
			file := aenv[envName].Value
			vol, ok := mountedVolume(adminSvc, adminSvc.Spec.Template.Spec.Containers[0], path.Dir(file))
			if !ok || vol.Secret == nil || vol.Secret.SecretName != s || !slices.ContainsFunc(vol.Secret.Items, func(k corev1.KeyToPath) bool {
				return k.Key == key && k.Path == path.Base(file)
			}) {
				t.Errorf("%s=%q is not key %q of Secret %q", envName, file, key, s)
			}
		}
	} else if _, ok := aenv["OPTOUT_ADMIN_TOKEN_FILE"]; ok {
		t.Error("OPTOUT_ADMIN_TOKEN_FILE set without admin.auth.existingSecret")
	}
	if svc := o.Service(full + "-admin"); svc == nil || svc.Spec.Ports[0].Port != int32(intValue(get("admin.service.port"))) {
		t.Errorf("admin Service %s-admin missing or on the wrong port", full)
	} else if c := svc.Spec.Selector["app.kubernetes.io/component"]; c != "admin" {
		t.Errorf("admin Service %s-admin selects the %q pods, want the admin service's", full, c)
	}
	if svc := o.Service(full + "-pusher-metrics"); svc == nil || svc.Spec.Selector["app.kubernetes.io/component"] != "pusher" {
		t.Errorf("no Service %s-pusher-metrics for scraping the pusher", full)
	}

	// Redis: the URL carries the password only as $(OPTOUT_REDIS_PASSWORD).
	renv := envOf(reconciler.Spec.Template.Spec.Containers[0])
	rurl := renv["OPTOUT_REDIS_URL"].Value
	if s := str("redis.auth.existingSecret"); s != "" {
		pw := renv["OPTOUT_REDIS_PASSWORD"]
		if pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil || pw.ValueFrom.SecretKeyRef.Name != s || pw.ValueFrom.SecretKeyRef.Key != str("redis.auth.passwordKey") {
			t.Errorf("OPTOUT_REDIS_PASSWORD = %+v, want key %s of Secret %s", pw, str("redis.auth.passwordKey"), s)
		}
		if !strings.Contains(rurl, ":$(OPTOUT_REDIS_PASSWORD)@") || strings.Replace(rurl, ":$(OPTOUT_REDIS_PASSWORD)@", "", 1) != str("redis.url") {
			t.Errorf("OPTOUT_REDIS_URL = %q, want %s with the password reference", rurl, str("redis.url"))
		}
	} else if rurl != str("redis.url") {
		t.Errorf("OPTOUT_REDIS_URL = %q, want %q", rurl, str("redis.url"))
	}
	if _, ok := penv["OPTOUT_REDIS_URL"]; ok {
		t.Error("the pusher got Redis settings; only the reconciler uses Redis")
	}

	// Optional parts.
	sandbox := o.Deployment(full + "-sfsandbox")
	if boolean("sfsandbox.enabled") != (sandbox != nil) {
		t.Errorf("sfsandbox.enabled=%v but the Deployment rendered = %v", boolean("sfsandbox.enabled"), sandbox != nil)
	}
	if sandbox != nil {
		checkSandbox(t, r, o, sandbox)
	}
	if boolean("serviceMonitor.enabled") != (len(o.ServiceMonitors) == 1) {
		t.Errorf("serviceMonitor.enabled=%v but %d rendered", boolean("serviceMonitor.enabled"), len(o.ServiceMonitors))
	}
	if boolean("prometheusRule.enabled") != (len(o.PrometheusRules) == 1) {
		t.Errorf("prometheusRule.enabled=%v but %d rendered", boolean("prometheusRule.enabled"), len(o.PrometheusRules))
	}

	// NOTES.txt: how to publish a test opt-out and open Jaeger.
	for _, want := range []string{"optoutctl publish acme", "nats pub optout.v1.events.acme", `"eventId":"evt-0001"`, "svc/" + full + "-admin", "/admin/"} {
		if !strings.Contains(strings.Join(strings.Fields(r.Notes), " "), want) {
			t.Errorf("NOTES.txt does not mention %q:\n%s", want, r.Notes)
		}
	}
	if s := str("otel.jaegerUI.service"); s != "" && !strings.Contains(r.Notes, "port-forward svc/"+s+" 16686:") {
		t.Errorf("NOTES.txt does not tell how to open Jaeger:\n%s", r.Notes)
	}
}

func checkSandbox(t *testing.T, r *Rendered, o *Objects, d *appsv1.Deployment) {
	t.Helper()
	cm := o.ConfigMap(d.Name)
	if cm == nil {
		t.Fatalf("sandbox orgs ConfigMap %s missing", d.Name)
	}
	var orgs struct {
		Orgs []map[string]any `json:"orgs"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["orgs.yaml"]), &orgs); err != nil || len(orgs.Orgs) == 0 {
		t.Fatalf("orgs.yaml does not parse: %v\n%s", err, cm.Data["orgs.yaml"])
	}
	for _, org := range orgs.Orgs {
		if _, ok := org["clientSecret"]; ok {
			t.Errorf("org %v has a clientSecret in a ConfigMap", org["name"])
		}
	}
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--orgs=/etc/sfsandbox/orgs.yaml") {
		t.Errorf("sandbox args %v do not point at the mounted orgs", c.Args)
	}
	if vol, ok := mountedVolume(d, c, "/etc/sfsandbox"); !ok || vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Errorf("orgs ConfigMap is not mounted at /etc/sfsandbox")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("the in-memory sandbox must run as exactly one replica, recreated")
	}
	if o.Service(d.Name) == nil {
		t.Errorf("sandbox Service %s missing", d.Name)
	}
}

func checkProd(t *testing.T, r *Rendered, o *Objects) {
	t.Helper()
	for _, n := range []string{"-pusher", "-reconciler"} {
		cm := o.ConfigMap(ReleaseName + n)
		if cm.Data["OPTOUT_NATS_REPLICAS"] != "3" || cm.Data["OPTOUT_NATS_STORAGE"] != "file" {
			t.Errorf("%s: production streams must be R3 on file storage: %v", cm.Name, cm.Data)
		}
		c := o.Deployment(ReleaseName + n).Spec.Template.Spec.Containers[0]
		env := envOf(c)
		for _, k := range []string{"NATS_CREDS_FILE", "NATS_TLS_CA"} {
			if env[k].Value == "" {
				t.Errorf("%s: %s unset in production", n, k)
			}
		}
	}
	if h := o.HPAs; len(h) != 1 || *h[0].Spec.MinReplicas < 3 {
		t.Errorf("production pusher must autoscale from 3 replicas")
	}
	if o.Deployment(ReleaseName+"-sfsandbox") != nil {
		t.Error("the sandbox is deployed in production")
	}
	renv := envOf(o.Deployment(ReleaseName + "-reconciler").Spec.Template.Spec.Containers[0])
	if renv["SSL_CERT_DIR"].Value == "" || !strings.HasPrefix(renv["OPTOUT_REDIS_URL"].Value, "rediss://") {
		t.Errorf("production Redis must be TLS with its CA: %v", renv["OPTOUT_REDIS_URL"].Value)
	}
}

func checkDev(t *testing.T, r *Rendered, o *Objects) {
	t.Helper()
	if o.Deployment(ReleaseName+"-sfsandbox") == nil {
		t.Error("dev values must deploy the sandbox")
	}
	if got := o.ConfigMap(ReleaseName + "-pusher").Data["OTEL_EXPORTER_OTLP_ENDPOINT"]; got != "http://jaeger:4317" {
		t.Errorf("dev traces go to %q, want Jaeger", got)
	}
	if got := o.ConfigMap(ReleaseName + "-sfsandbox-env").Data["OTEL_EXPORTER_OTLP_ENDPOINT"]; got != "http://jaeger:4317" {
		t.Errorf("dev sandbox traces go to %q, want Jaeger", got)
	}
	for _, d := range o.Deployments {
		c := d.Spec.Template.Spec.Containers[0]
		if !strings.HasPrefix(c.Image, "optout-sync/") {
			t.Errorf("%s image %q is not one Tilt builds (optout-sync/<service>)", d.Name, c.Image)
		}
		if q := c.Resources.Limits.Memory(); q.Value() > 512<<20 {
			t.Errorf("%s: dev memory limit %s is not small", d.Name, q)
		}
	}
}

func names(o *Objects) []string {
	var out []string
	for _, x := range o.All {
		out = append(out, fmt.Sprintf("%T/%s", x, x.GetName()))
	}
	return out
}

func pdbFor(o *Objects, name string) bool {
	for _, p := range o.PDBs {
		if p.Name == name {
			return true
		}
	}
	return false
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func mountedVolume(d *appsv1.Deployment, c corev1.Container, mountPath string) (corev1.Volume, bool) {
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(mountPath) {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == m.Name {
					return v, true
				}
			}
		}
	}
	return corev1.Volume{}, false
}

func countSFMounts(c corev1.Container, dir string) int {
	n := 0
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path.Clean(m.MountPath), path.Clean(dir)+"/") {
			n++
		}
	}
	return n
}

// TestChartRefusesBadValues: the schema and the chart's own checks stop
// values that would inline a credential, misplace a variable or break a
// service's validation at start.
func TestChartRefusesBadValues(t *testing.T) {
	dir := chartPath(t)
	cases := []struct {
		name string
		sets []string
		want string
	}{
		{"NATS password in the URL", []string{"nats.url=nats://u:hunter2@nats:4222"}, "/nats/url"},
		{"Redis password in the URL", []string{"redis.url=redis://:hunter2@redis:6379/0"}, "/redis/url"},
		{"a secret as a config value", []string{"config.NATS_PASSWORD=hunter2"}, "NATS_PASSWORD"},
		{"admin token as a value", []string{"pusher.config.OPTOUT_ADMIN_TOKEN=0123456789abcdef"}, "OPTOUT_ADMIN_TOKEN"},
		{"pusher variable in the common block", []string{"config.OPTOUT_WORKERS=8"}, "OPTOUT_WORKERS"},
		{"reconciler variable in the pusher block", []string{"pusher.config.OPTOUT_LEASE_TTL=1m"}, "OPTOUT_LEASE_TTL"},
		{"worker count out of range", []string{"pusher.config.OPTOUT_WORKERS=0"}, "OPTOUT_WORKERS"},
		{"not a duration", []string{"pusher.config.OPTOUT_LINGER=soon"}, "OPTOUT_LINGER"},
		{"unknown storage", []string{"config.OPTOUT_NATS_STORAGE=disk"}, "OPTOUT_NATS_STORAGE"},
		{"tenant name with a slash", []string{"salesforce.tenants[0].name=../etc", "salesforce.tenants[0].existingSecret=sf"}, "name"},
		{"tenant without a Secret", []string{"salesforce.tenants[0].name=acme"}, "existingSecret"},
		{"same tenant twice", []string{"salesforce.tenants[0].name=acme", "salesforce.tenants[0].existingSecret=a", "salesforce.tenants[1].name=acme", "salesforce.tenants[1].existingSecret=b"}, "listed twice"},
		{"sandbox org with credentials", []string{"sfsandbox.orgs[0].name=acme", "sfsandbox.orgs[0].clientSecret=s3cr3t"}, "sfsandbox"},
		{"NATS auth Secret without keys", []string{"nats.auth.existingSecret=nats"}, "set the key"},
		{"NATS user without password", []string{"nats.auth.existingSecret=nats", "nats.auth.userKey=user"}, "go together"},
		{"mutual TLS half configured", []string{"nats.tls.existingSecret=tls", "nats.tls.certKey=tls.crt"}, "go together"},
		{"Redis CA without TLS", []string{"redis.tls.existingSecret=ca"}, "rediss://"},
		{"a typo in the values", []string{"pusher.replica=3"}, "replica"},
		{"invalid Secret name", []string{"admin.auth.existingSecret=Not_A_Name"}, "existingSecret"},
		{"grace period the services cannot meet", []string{"pusher.terminationGracePeriodSeconds=10"}, "terminationGracePeriodSeconds"},
		{"HPA with min above max", []string{"pusher.autoscaling.enabled=true", "pusher.autoscaling.minReplicas=5", "pusher.autoscaling.maxReplicas=2"}, "minReplicas"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(dir, TestNamespace, nil, c.sets)
			if err == nil {
				t.Fatalf("--set %v was accepted", c.sets)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("--set %v refused, but the error does not name %q: %v", c.sets, c.want, err)
			}
		})
	}
}

// TestChecksCatchBrokenTemplates breaks the chart in memory and expects the
// checks above to notice: the tests can fail.
func TestChecksCatchBrokenTemplates(t *testing.T) {
	dir := chartPath(t)
	cases := []struct {
		name, file, old, new string
		want                 string
	}{
		{"readiness probe on the wrong path", "templates/_helpers.tpl", "path: /readyz", "path: /ready", "readiness probe path"},
		{"no container securityContext", "templates/pusher-deployment.yaml",
			`{{- include "optout-sync.containerSecurityContext" . | nindent 10 }}`, "", "no securityContext"},
		{"no resources", "templates/reconciler-deployment.yaml", "toYaml $r.resources", "toYaml dict", "no memory limit"},
		{"an inlined password", "templates/pusher-deployment.yaml", "          env:\n",
			"          env:\n            - name: NATS_PASSWORD\n              value: hunter2hunter2\n", "is a literal"},
		{"a field Kubernetes does not have", "templates/admin-service.yaml", "  type: {{", "  typo: 1\n  type: {{", "strict decode"},
		{"a Secret in the chart", "templates/admin-service.yaml", "# The admin service:",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\nstringData:\n  client_secret: x\n---\n# The admin service:", "Secret leaked is rendered"},
		{"a Secret that is not in the values", "templates/_helpers.tpl", "secretName: {{ $t.existingSecret }}", "secretName: other-secret", "not an existingSecret"},
		{"service pointing at nothing", "templates/admin-service.yaml", "targetPort: admin", "targetPort: web", "targetPort web"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ch, err := loader.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range ch.Templates {
				if f.Name == c.file && strings.Contains(string(f.Data), c.old) {
					f.Data = []byte(strings.Replace(string(f.Data), c.old, c.new, 1))
					found = true
				}
			}
			if !found {
				t.Fatalf("%s no longer contains %q: update this mutation", c.file, c.old)
			}
			r, err := renderLoaded(ch, TestNamespace, valuesPaths(dir, "values-dev.yaml"), nil)
			if err != nil {
				t.Fatal(err)
			}
			o, problems := decodeObjects(r.Docs)
			problems = append(problems, checkObjects(o, rulesFor(r))...)
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("the checks missed it (want a problem containing %q); got %q", c.want, problems)
		})
	}
}

// TestImageByDigest: a digest-pinned release renders valid images and labels.
func TestImageByDigest(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("ab", 32)
	for _, tag := range []string{"0.1.0" + digest, digest} {
		t.Run(tag[:6], func(t *testing.T) {
			_, o := renderChecked(t, nil, []string{"image.tag=" + tag})
			img := o.Deployment(ReleaseName + "-pusher").Spec.Template.Spec.Containers[0].Image
			want := "ghcr.io/optout-sync/pusher:" + tag
			if strings.HasPrefix(tag, "@") {
				want = "ghcr.io/optout-sync/pusher" + tag
			}
			if img != want {
				t.Errorf("image %q, want %q", img, want)
			}
		})
	}
}

// TestHelmLintCatchesMistakes: lint a broken copy of the chart.
func TestHelmLintCatchesMistakes(t *testing.T) {
	src := chartPath(t)
	cases := []struct{ name, file, old, new string }{
		{"version not SemVer", "Chart.yaml", "version: 0.1.0", "version: one"},
		{"template that does not parse", "templates/admin-service.yaml", "  ports:", "  ports: {{"},
		{"default values off the schema", "values.yaml", "  port: 9090\n  service:", "  port: ninety\n  service:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "optout-sync")
			if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, c.file)
			b, err := os.ReadFile(p)
			if err != nil || !strings.Contains(string(b), c.old) {
				t.Fatalf("%s no longer contains %q: update this case", c.file, c.old)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), c.old, c.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := lintChart(dir, TestNamespace, nil); err == nil {
				t.Fatal("helm lint --strict passed a broken chart")
			}
		})
	}
}
