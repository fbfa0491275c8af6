package deploytest

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Objects are the rendered objects, each decoded strictly into its
// Kubernetes API type: a field the type does not have is an error.
type Objects struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	ServiceAccounts []*corev1.ServiceAccount
	PDBs            []*policyv1.PodDisruptionBudget
	HPAs            []*autoscalingv2.HorizontalPodAutoscaler
	ServiceMonitors []*unstructured.Unstructured
	PrometheusRules []*PrometheusRule
	Secrets         []*corev1.Secret
	All             []metav1.Object
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// decodeObjects decodes every document; unknown kinds and unknown fields
// are errors.
func decodeObjects(docs []string) (*Objects, []string) {
	o := &Objects{}
	var problems []string
	for _, doc := range docs {
		var tm typeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			problems = append(problems, fmt.Sprintf("document does not parse: %v\n%s", err, doc))
			continue
		}
		var obj metav1.Object
		var err error
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			v := &appsv1.Deployment{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.Deployments = append(o.Deployments, v)
		case "v1/Service":
			v := &corev1.Service{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.Services = append(o.Services, v)
		case "v1/ConfigMap":
			v := &corev1.ConfigMap{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.ConfigMaps = append(o.ConfigMaps, v)
		case "v1/ServiceAccount":
			v := &corev1.ServiceAccount{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.ServiceAccounts = append(o.ServiceAccounts, v)
		case "policy/v1/PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.PDBs = append(o.PDBs, v)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			v := &autoscalingv2.HorizontalPodAutoscaler{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.HPAs = append(o.HPAs, v)
		case "v1/Secret":
			v := &corev1.Secret{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.Secrets = append(o.Secrets, v)
		case "monitoring.coreos.com/v1/ServiceMonitor":
			// No Go type in k8s.io/api: decoded as unstructured, its fields
			// checked one by one in checkServiceMonitor.
			v := &unstructured.Unstructured{}
			var m map[string]any
			err = yaml.UnmarshalStrict([]byte(doc), &m)
			v.Object = m
			obj = v
			o.ServiceMonitors = append(o.ServiceMonitors, v)
		case "monitoring.coreos.com/v1/PrometheusRule":
			// No Go type in our dependencies: decoded strictly into the
			// fields of the operator's type that the chart uses
			// (PrometheusRule, prometheusrule_test.go).
			v := &PrometheusRule{}
			err, obj = yaml.UnmarshalStrict([]byte(doc), v), v
			o.PrometheusRules = append(o.PrometheusRules, v)
		default:
			problems = append(problems, fmt.Sprintf("unexpected object %s %s: add a strict decoder for it", tm.APIVersion, tm.Kind))
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: strict decode into %s: %v", tm.Kind, tm.APIVersion, err))
			continue
		}
		o.All = append(o.All, obj)
	}
	return o, problems
}

func (o *Objects) Deployment(name string) *appsv1.Deployment {
	for _, d := range o.Deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (o *Objects) ConfigMap(name string) *corev1.ConfigMap {
	for _, c := range o.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (o *Objects) Service(name string) *corev1.Service {
	for _, s := range o.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Rules every rendered chart obeys, whatever the values.
type rules struct {
	namespace      string
	allowedSecrets map[string]bool // existingSecret names (and pull secrets) from the values
	adminPort      int32
	// Components serving the admin port (/healthz, /readyz).
	adminComponents []string
}

var (
	credentialName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|TOKEN|SECRET|CREDS|CREDENTIAL|NKEY|_KEY$|PRIVATE|HEADERS|API_?KEY)`)
	// Values that look like a credential, wherever they appear.
	credentialValue = []*regexp.Regexp{
		regexp.MustCompile(`-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE|NATS USER JWT)`),
		regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`),           // JWT
		regexp.MustCompile(`\bS[UAOC][A-Z2-7]{50,}`),                              // nkey seed
		regexp.MustCompile(`://[^/\s:@]+:[^/\s@$][^/\s@]*@`),                      // user:password@ not from $(VAR)
		regexp.MustCompile(`://:[^/\s@$][^/\s@]*@`),                               // :password@
		regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9+/=._-]{8,}`),        // auth header
		regexp.MustCompile(`(?i)(client_?secret|password|token)\s*[:=]\s*\S{6,}`), // key=value
	}
	envVarName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func looksLikeCredential(s string) bool {
	for _, re := range credentialValue {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// checkObjects applies the chart-wide rules and returns every violation.
func checkObjects(o *Objects, r rules) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	for _, s := range o.Secrets {
		add("Secret %s is rendered: credentials come only from existing Secrets", s.Name)
	}
	for _, obj := range o.All {
		kind := fmt.Sprintf("%T", obj)
		if errs := validation.IsDNS1123Subdomain(obj.GetName()); len(errs) > 0 {
			add("%s %q: invalid name: %v", kind, obj.GetName(), errs)
		}
		if ns := obj.GetNamespace(); ns != "" && ns != r.namespace {
			add("%s %s: namespace %q, want the release's", kind, obj.GetName(), ns)
		}
		checkLabels(obj.GetName(), obj.GetLabels(), true, add)
	}

	sas := map[string]bool{"default": true}
	for _, sa := range o.ServiceAccounts {
		sas[sa.Name] = true
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			add("ServiceAccount %s mounts API tokens; no service calls the Kubernetes API", sa.Name)
		}
	}
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range o.ConfigMaps {
		cms[cm.Name] = cm
		for k, v := range cm.Data {
			if looksLikeCredential(v) {
				add("ConfigMap %s key %s: value looks like a credential", cm.Name, k)
			}
			if envVarName.MatchString(k) && credentialName.MatchString(k) && !strings.HasSuffix(k, "_DIR") {
				add("ConfigMap %s: %s is a credential-looking variable; it must come from a Secret", cm.Name, k)
			}
		}
	}

	for _, d := range o.Deployments {
		checkDeployment(d, r, sas, cms, add)
	}
	for _, s := range o.Services {
		checkService(s, o, add)
	}
	for _, h := range o.HPAs {
		d := o.Deployment(h.Spec.ScaleTargetRef.Name)
		switch {
		case h.Spec.ScaleTargetRef.Kind != "Deployment" || d == nil:
			add("HPA %s: target %s/%s is not a rendered Deployment", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
		case d.Spec.Replicas != nil:
			add("HPA %s: Deployment %s also sets replicas (the HPA and helm upgrades would fight)", h.Name, d.Name)
		default:
			for _, m := range h.Spec.Metrics {
				if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
					for _, c := range d.Spec.Template.Spec.Containers {
						if c.Resources.Requests.Cpu().IsZero() {
							add("HPA %s scales on CPU utilisation but container %s has no CPU request", h.Name, c.Name)
						}
					}
				}
			}
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			add("HPA %s: minReplicas %v, maxReplicas %d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
	for _, pdb := range o.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			add("PDB %s: selector %v: %v", pdb.Name, pdb.Spec.Selector, err)
			continue
		}
		if pdb.Spec.MinAvailable != nil && pdb.Spec.MaxUnavailable != nil {
			add("PDB %s sets both minAvailable and maxUnavailable", pdb.Name)
		}
		if n := countMatching(o, sel); n != 1 {
			add("PDB %s selects the pods of %d Deployments, want 1", pdb.Name, n)
		}
	}
	for _, sm := range o.ServiceMonitors {
		checkServiceMonitor(sm, o, add)
	}
	return p
}

func checkLabels(name string, l map[string]string, standard bool, add func(string, ...any)) {
	for k, v := range l {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			add("%s: label key %q: %v", name, k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			add("%s: label %s=%q: %v", name, k, v, errs)
		}
	}
	if standard {
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[k] == "" {
				add("%s: standard label %s missing", name, k)
			}
		}
	}
}

func countMatching(o *Objects, sel labels.Selector) int {
	n := 0
	for _, d := range o.Deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			n++
		}
	}
	return n
}

func checkDeployment(d *appsv1.Deployment, r rules, sas map[string]bool, cms map[string]*corev1.ConfigMap, add func(string, ...any)) {
	name := "Deployment " + d.Name
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("%s: selector %v does not select its own pods (%v)", name, d.Spec.Selector, err)
	}
	checkLabels(name+" pod template", d.Spec.Template.Labels, true, add)
	pod := d.Spec.Template.Spec
	component := d.Spec.Template.Labels["app.kubernetes.io/component"]
	if component == "" {
		add("%s: pods have no app.kubernetes.io/component label", name)
	}
	if !sas[pod.ServiceAccountName] {
		add("%s: service account %q is not rendered", name, pod.ServiceAccountName)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		add("%s: mounts a service account token", name)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		add("%s: service links on: a Service named like a variable prefix (nats -> NATS_*) would inject variables", name)
	}
	for _, s := range pod.ImagePullSecrets {
		if !r.allowedSecrets[s.Name] {
			add("%s: image pull Secret %q is not one named in the values", name, s.Name)
		}
	}
	// Pod security.
	psc := pod.SecurityContext
	if psc == nil {
		add("%s: no pod securityContext", name)
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		add("%s: pod runAsNonRoot is not true", name)
	}
	if psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		add("%s: pod runAsUser is unset or root", name)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("%s: pod seccompProfile is not RuntimeDefault", name)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		add("%s: uses host namespaces", name)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
			add("%s: volume name %q: %v", name, v.Name, errs)
		}
		if v.HostPath != nil {
			add("%s: hostPath volume %s", name, v.Name)
		}
		if v.Secret != nil && !r.allowedSecrets[v.Secret.SecretName] {
			add("%s: volume %s mounts Secret %q, which is not an existingSecret of the values", name, v.Name, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil && !r.allowedSecrets[src.Secret.Name] {
					add("%s: volume %s projects Secret %q, not an existingSecret of the values", name, v.Name, src.Secret.Name)
				}
			}
		}
		if v.ConfigMap != nil && cms[v.ConfigMap.Name] == nil {
			add("%s: volume %s: ConfigMap %q is not rendered", name, v.Name, v.ConfigMap.Name)
		}
	}
	if len(pod.InitContainers) > 0 {
		add("%s: unexpected init containers", name)
	}
	if len(pod.Containers) != 1 {
		add("%s: %d containers, want 1", name, len(pod.Containers))
	}
	used := map[string]bool{}
	for _, c := range pod.Containers {
		cn := name + " container " + c.Name
		if c.Image == "" || !(strings.Contains(path.Base(c.Image), ":") || strings.Contains(c.Image, "@sha256:")) {
			add("%s: image %q has no tag or digest", cn, c.Image)
		}
		if strings.HasSuffix(c.Image, ":latest") {
			add("%s: image %q uses :latest", cn, c.Image)
		}
		if len(c.Command) > 0 {
			add("%s: sets command; use args so the image's entrypoint (and Tilt's restart wrapper) stays", cn)
		}
		checkContainerSecurity(cn, c.SecurityContext, psc, add)
		checkResources(cn, c.Resources, add)

		ports := map[string]int32{}
		for _, p := range c.Ports {
			if p.Name == "" {
				add("%s: port %d has no name", cn, p.ContainerPort)
			}
			ports[p.Name] = p.ContainerPort
		}
		resolves := func(port intstr.IntOrString) (int32, bool) {
			if port.Type == intstr.String {
				n, ok := ports[port.StrVal]
				return n, ok
			}
			for _, n := range ports {
				if n == port.IntVal {
					return n, true
				}
			}
			return 0, false
		}
		probe := func(kind string, pr *corev1.Probe, wantPath string) {
			if pr == nil {
				add("%s: no %s probe", cn, kind)
				return
			}
			if pr.HTTPGet == nil {
				add("%s: %s probe is not an HTTP GET", cn, kind)
				return
			}
			n, ok := resolves(pr.HTTPGet.Port)
			if !ok {
				add("%s: %s probe port %s is not a container port", cn, kind, pr.HTTPGet.Port.String())
			}
			if wantPath != "" {
				if pr.HTTPGet.Path != wantPath {
					add("%s: %s probe path %q, want %q", cn, kind, pr.HTTPGet.Path, wantPath)
				}
				if n != r.adminPort {
					add("%s: %s probe on port %d, want the admin port %d", cn, kind, n, r.adminPort)
				}
			}
		}
		admin := slices.Contains(r.adminComponents, component)
		live, ready := "", ""
		if admin {
			live, ready = "/healthz", "/readyz"
			if ports["admin"] != r.adminPort {
				add("%s: admin port is %d, want %d", cn, ports["admin"], r.adminPort)
			}
			if d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *d.Spec.Template.Spec.TerminationGracePeriodSeconds < 35 {
				add("%s: terminationGracePeriodSeconds below 35s: the service settles its work within 30s of SIGTERM", name)
			}
		}
		probe("liveness", c.LivenessProbe, live)
		probe("readiness", c.ReadinessProbe, ready)
		if c.StartupProbe != nil {
			probe("startup", c.StartupProbe, live)
		}

		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				cm := cms[ef.ConfigMapRef.Name]
				if cm == nil {
					add("%s: envFrom ConfigMap %q is not rendered", cn, ef.ConfigMapRef.Name)
					continue
				}
				for k := range cm.Data {
					if !envVarName.MatchString(k) {
						add("%s: envFrom ConfigMap %s key %q is not a variable name", cn, ef.ConfigMapRef.Name, k)
					}
				}
			case ef.SecretRef != nil:
				if !r.allowedSecrets[ef.SecretRef.Name] {
					add("%s: envFrom Secret %q is not an existingSecret of the values", cn, ef.SecretRef.Name)
				}
			}
		}
		secretMounts := map[string]bool{} // mount paths of Secret volumes
		for _, m := range c.VolumeMounts {
			v, ok := volumes[m.Name]
			if !ok {
				add("%s: volumeMount %s has no volume", cn, m.Name)
				continue
			}
			used[m.Name] = true
			if m.SubPath != "" && v.Secret != nil {
				add("%s: Secret %s mounted with subPath never sees a rotation", cn, m.Name)
			}
			if v.Secret != nil || v.Projected != nil {
				secretMounts[path.Clean(m.MountPath)] = true
				if !m.ReadOnly {
					add("%s: Secret mount %s is not readOnly", cn, m.MountPath)
				}
			}
		}
		defined := map[string]bool{}
		for _, e := range c.Env {
			if defined[e.Name] {
				add("%s: env %s defined twice", cn, e.Name)
			}
			defined[e.Name] = true
			if e.ValueFrom != nil {
				switch vf := e.ValueFrom; {
				case vf.SecretKeyRef != nil:
					if !r.allowedSecrets[vf.SecretKeyRef.Name] {
						add("%s: env %s reads Secret %q, not an existingSecret of the values", cn, e.Name, vf.SecretKeyRef.Name)
					}
				case vf.ConfigMapKeyRef != nil:
					if cms[vf.ConfigMapKeyRef.Name] == nil {
						add("%s: env %s reads ConfigMap %q, not rendered", cn, e.Name, vf.ConfigMapKeyRef.Name)
					}
				}
				continue
			}
			if looksLikeCredential(e.Value) {
				add("%s: env %s holds a credential-looking value", cn, e.Name)
			}
			if credentialName.MatchString(e.Name) && e.Value != "" {
				// Only a path to a file mounted from a Secret is allowed.
				p := path.Clean(e.Value)
				inside := false
				for mp := range secretMounts {
					if strings.HasPrefix(p, mp+"/") {
						inside = true
					}
				}
				if !inside {
					add("%s: env %s=%q is a literal; credentials come from Secrets (valueFrom or a file in a Secret mount)", cn, e.Name, e.Value)
				}
			}
			for _, ref := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(e.Value, -1) {
				if !defined[ref[1]] || ref[1] == e.Name {
					add("%s: env %s refers to $(%s), which is not defined before it", cn, e.Name, ref[1])
				}
			}
		}
	}
	for v := range volumes {
		if !used[v] {
			add("%s: volume %s is never mounted", name, v)
		}
	}
}

func checkContainerSecurity(cn string, sc *corev1.SecurityContext, psc *corev1.PodSecurityContext, add func(string, ...any)) {
	if sc == nil {
		add("%s: no securityContext", cn)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("%s: allowPrivilegeEscalation is not false", cn)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		add("%s: readOnlyRootFilesystem is not true", cn)
	}
	if sc.Privileged != nil && *sc.Privileged {
		add("%s: privileged", cn)
	}
	if (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) && (psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot) {
		add("%s: runAsNonRoot is not true", cn)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		add("%s: runs as root", cn)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		add("%s: capabilities do not drop ALL", cn)
	} else if len(sc.Capabilities.Add) > 0 {
		add("%s: adds capabilities %v", cn, sc.Capabilities.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("%s: seccompProfile is not RuntimeDefault", cn)
	}
}

func checkResources(cn string, res corev1.ResourceRequirements, add func(string, ...any)) {
	req, lim := res.Requests, res.Limits
	if req.Cpu().IsZero() {
		add("%s: no CPU request", cn)
	}
	if req.Memory().IsZero() {
		add("%s: no memory request", cn)
	}
	if lim.Memory().IsZero() {
		add("%s: no memory limit", cn)
	} else if req.Memory().Cmp(*lim.Memory()) > 0 {
		add("%s: memory request %s above its limit %s", cn, req.Memory(), lim.Memory())
	}
	if !lim.Cpu().IsZero() && req.Cpu().Cmp(*lim.Cpu()) > 0 {
		add("%s: CPU request above its limit", cn)
	}
}

func checkService(s *corev1.Service, o *Objects, add func(string, ...any)) {
	name := "Service " + s.Name
	if errs := validation.IsDNS1035Label(s.Name); len(errs) > 0 {
		add("%s: a Service name must be a DNS-1035 label: %v", name, errs)
	}
	if len(s.Spec.Selector) == 0 {
		add("%s: no selector", name)
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var target *appsv1.Deployment
	for _, d := range o.Deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			if target != nil {
				add("%s selects the pods of two Deployments (%s, %s)", name, target.Name, d.Name)
			}
			target = d
		}
	}
	if target == nil {
		add("%s selects no rendered Deployment's pods", name)
		return
	}
	for _, p := range s.Spec.Ports {
		if p.Name == "" {
			add("%s: port %d has no name", name, p.Port)
		}
		found := false
		for _, c := range target.Spec.Template.Spec.Containers {
			for _, cp := range c.Ports {
				if (p.TargetPort.Type == intstr.String && cp.Name == p.TargetPort.StrVal) ||
					(p.TargetPort.Type == intstr.Int && cp.ContainerPort == p.TargetPort.IntVal) {
					found = true
				}
			}
		}
		if !found {
			add("%s: targetPort %s is not a port of Deployment %s", name, p.TargetPort.String(), target.Name)
		}
	}
}

func checkServiceMonitor(sm *unstructured.Unstructured, o *Objects, add func(string, ...any)) {
	name := "ServiceMonitor " + sm.GetName()
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance"} {
		if sm.GetLabels()[k] == "" {
			add("%s: label %s missing", name, k)
		}
	}
	spec, ok := sm.Object["spec"].(map[string]any)
	if !ok {
		add("%s: no spec", name)
		return
	}
	allowed := map[string]bool{"selector": true, "endpoints": true, "jobLabel": true, "namespaceSelector": true}
	for k := range spec {
		if !allowed[k] {
			add("%s: spec.%s is not checked by this test; extend checkServiceMonitor", name, k)
		}
	}
	selRaw, _ := yaml.Marshal(spec["selector"])
	var ls metav1.LabelSelector
	if err := yaml.UnmarshalStrict(selRaw, &ls); err != nil {
		add("%s: selector: %v", name, err)
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || sel.Empty() {
		add("%s: selector %v: %v", name, ls, err)
		return
	}
	var selected []*corev1.Service
	for _, s := range o.Services {
		if sel.Matches(labels.Set(s.Labels)) {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		add("%s selects no Service", name)
	}
	eps, _ := spec["endpoints"].([]any)
	if len(eps) == 0 {
		add("%s: no endpoints", name)
	}
	for i, e := range eps {
		ep, _ := e.(map[string]any)
		for k := range ep {
			if !slices.Contains([]string{"port", "path", "interval", "scrapeTimeout"}, k) {
				add("%s: endpoints[%d].%s is not checked by this test", name, i, k)
			}
		}
		port, _ := ep["port"].(string)
		if ep["path"] != "/metrics" {
			add("%s: endpoints[%d].path = %v, want /metrics", name, i, ep["path"])
		}
		for _, s := range selected {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
				add("%s: endpoints[%d] port %q is not a port of Service %s", name, i, port, s.Name)
			}
		}
		for _, k := range []string{"interval", "scrapeTimeout"} {
			if v, ok := ep[k].(string); ok && !regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`).MatchString(v) {
				add("%s: endpoints[%d].%s %q is not a Prometheus duration", name, i, k, v)
			}
		}
	}
}

// existingSecrets collects every `existingSecret` value and image pull
// Secret of the values: the only Secrets the chart may reference.
func existingSecrets(v map[string]any) map[string]bool {
	out := map[string]bool{}
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, v := range t {
				if s, ok := v.(string); ok && k == "existingSecret" && s != "" {
					out[s] = true
				}
				walk(v)
			}
		case []any:
			for _, v := range t {
				walk(v)
			}
		}
	}
	walk(v)
	if img, ok := v["image"].(map[string]any); ok {
		if ps, ok := img["pullSecrets"].([]any); ok {
			for _, s := range ps {
				out[fmt.Sprint(s)] = true
			}
		}
	}
	return out
}

func intValue(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}
