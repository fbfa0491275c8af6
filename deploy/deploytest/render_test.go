package deploytest

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// kubeVersion is the cluster version the chart is rendered and linted for.
const kubeVersion = "v1.33.0"

// Rendered is one `helm template` of the chart.
type Rendered struct {
	Manifest string
	Notes    string
	Docs     []string         // one YAML document per object, in install order
	Values   chartutil.Values // the chart's defaults coalesced with the user's values
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// userValues merges values files and --set expressions the way the helm
// CLI does (-f in order, then --set).
func userValues(valueFiles, sets []string) (map[string]any, error) {
	opts := values.Options{ValueFiles: valueFiles, Values: sets}
	return opts.MergeValues(getter.Providers{})
}

// valuesPaths turns the names of ValuesFiles into paths ("" = defaults only).
func valuesPaths(chartDir string, names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" {
			out = append(out, filepath.Join(chartDir, n))
		}
	}
	return out
}

// renderChart runs `helm template <release> <chart> -n optout -f ... --set ...`
// through action.Install (DryRun, ClientOnly), which also validates the
// values against values.schema.json.
func renderChart(chartDir, namespace string, valueFiles, sets []string) (*Rendered, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	return renderLoaded(ch, namespace, valueFiles, sets)
}

func renderLoaded(ch *chart.Chart, namespace string, valueFiles, sets []string) (*Rendered, error) {
	vals, err := userValues(valueFiles, sets)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.DryRunOption = "client"
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = ReleaseName
	inst.Namespace = namespace
	inst.KubeVersion = kv
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("helm template: %w", err)
	}
	merged, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &Rendered{Manifest: rel.Manifest, Notes: rel.Info.Notes, Values: merged}
	for _, h := range rel.Hooks {
		r.Manifest += "\n---\n" + h.Manifest
	}
	split := releaseutil.SplitManifests(r.Manifest)
	keys := make([]string, 0, len(split))
	for k := range split {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for _, k := range keys {
		if strings.TrimSpace(stripComments(split[k])) != "" {
			r.Docs = append(r.Docs, split[k])
		}
	}
	return r, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// lintChart is `helm lint --strict [-f values] <chart>`: warnings fail too.
func lintChart(chartDir, namespace string, valueFiles []string) ([]string, error) {
	vals, err := userValues(valueFiles, nil)
	if err != nil {
		return nil, err
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	l.KubeVersion = kv
	res := l.Run([]string{chartDir}, vals)
	var problems []string
	for _, m := range res.Messages {
		problems = append(problems, m.Error())
	}
	if len(res.Errors) > 0 {
		return problems, fmt.Errorf("helm lint --strict: %d error(s): %v", len(res.Errors), res.Errors)
	}
	return problems, nil
}
