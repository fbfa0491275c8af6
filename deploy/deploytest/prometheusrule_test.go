package deploytest

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// PrometheusRule is the Prometheus Operator's monitoring.coreos.com/v1
// PrometheusRule, with the fields the chart sets: a strict decode into it
// refuses any other (the operator would drop or refuse them).
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              RuleSpec `json:"spec"`
}

// RuleSpec is a PrometheusRule's spec: Prometheus's own rule file format.
type RuleSpec struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is one alerting rule (the chart has no recording rules).
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// wantAlerts are the alerts the chart promises (issue 23), each on the
// metric the services export under that name.
var wantAlerts = map[string]string{
	"OptoutRetryHorizonExceeded":           "optout_retry_horizon_exceeded_total",
	"OptoutTenantUnhealthy":                "optout_tenant_healthy",
	"OptoutDeadLettersGrowing":             "optout_dead_lettered_total",
	"OptoutDeadLetterUnwritable":           "optout_dead_letter_unwritable_total",
	"OptoutComplianceClockWarning":         "optout_compliance_oldest_unhonoured_seconds",
	"OptoutComplianceMailboxDeadline":      "optout_compliance_oldest_unhonoured_seconds",
	"OptoutComplianceBusinessDaysDeadline": "optout_compliance_oldest_unhonoured_business_days",
	"OptoutReconcileRunFailed":             "optout_reconcile_runs_total",
	"OptoutReconcileNoRecentSuccess":       "optout_reconcile_last_success_timestamp_seconds",
	"OptoutCDCStalled":                     "optout_cdc_stalled",
	"OptoutCDCAllocationHigh":              "optout_cdc_allocation_used_ratio",
}

// TestPrometheusRule renders the chart with the PrometheusRule on (over
// the default and the production values), decodes it strictly, checks that
// every promised alert is there with a severity and a runbook_url whose
// entry exists in docs/operations.md, then runs `promtool check rules` and
// the rule unit tests of testdata/alerts_test.yaml (each alert fires, and
// does not fire, on the series the tests feed it). promtool is the one make
// test-deploy builds from the Go module proxy (PROMTOOL, bin/promtool-<version>).
func TestPrometheusRule(t *testing.T) {
	root := repoRoot(t)
	dir := chartPath(t)
	anchors := markdownAnchors(t, filepath.Join(root, "docs/operations.md"))
	for _, vf := range []string{"", "values-prod.yaml"} {
		t.Run(label(vf), func(t *testing.T) {
			_, o := renderChecked(t, valuesPaths(dir, vf), []string{"prometheusRule.enabled=true"})
			if len(o.PrometheusRules) != 1 {
				t.Fatalf("%d PrometheusRules rendered, want 1", len(o.PrometheusRules))
			}
			pr := o.PrometheusRules[0]
			got := map[string]bool{}
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					got[r.Alert] = true
					checkAlert(t, r, anchors)
				}
			}
			for name := range wantAlerts {
				if !got[name] {
					t.Errorf("alert %s is missing", name)
				}
			}
			for name := range got {
				if _, ok := wantAlerts[name]; !ok {
					t.Errorf("alert %s is not in wantAlerts: add it there, with a rule unit test", name)
				}
			}
			if label(vf) == "default" {
				if err := promtoolRules(t, pr.Spec); err != nil {
					t.Error(err)
				}
			}
		})
	}
	// The unit tests bite, and the values reach the rules: with the
	// compliance warning at 30 h, acme's 25-hour wait must no longer fire.
	t.Run("threshold moved", func(t *testing.T) {
		_, o := renderChecked(t, nil, []string{"prometheusRule.enabled=true", "prometheusRule.complianceWarnHours=30"})
		if len(o.PrometheusRules) != 1 {
			t.Fatalf("%d PrometheusRules rendered, want 1", len(o.PrometheusRules))
		}
		err := promtoolRules(t, o.PrometheusRules[0].Spec)
		if err == nil || !strings.Contains(err.Error(), "OptoutComplianceClockWarning") {
			t.Errorf("the rule unit tests passed with the warning moved to 30 h: %v", err)
		}
	})
}

func checkAlert(t *testing.T, r Rule, anchors map[string]bool) {
	t.Helper()
	if r.Alert == "" || r.Expr == "" {
		t.Errorf("rule %+v: want an alert with an expression", r)
		return
	}
	if m := wantAlerts[r.Alert]; m != "" && !regexp.MustCompile(`\b`+m+`\b`).MatchString(r.Expr) {
		t.Errorf("%s: expression %q does not use %s", r.Alert, r.Expr, m)
	}
	if s := r.Labels["severity"]; s != "warning" && s != "critical" {
		t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
	}
	for _, k := range []string{"summary", "description", "runbook_url"} {
		if r.Annotations[k] == "" {
			t.Errorf("%s: no %s annotation", r.Alert, k)
		}
	}
	u, err := url.Parse(r.Annotations["runbook_url"])
	if err != nil || u.Fragment == "" || !strings.HasSuffix(u.Path, "/docs/operations.md") {
		t.Errorf("%s: runbook_url %q, want docs/operations.md#<entry>", r.Alert, r.Annotations["runbook_url"])
	} else if !anchors[u.Fragment] {
		t.Errorf("%s: runbook_url's #%s is no heading of docs/operations.md", r.Alert, u.Fragment)
	}
}

// markdownAnchors are the anchors GitHub gives the headings of a file.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			out[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
		}
	}
	return out
}

// alertTests is the part of promtool's test file format this test reads:
// which alerts are evaluated, and whether each is expected to fire.
type alertTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// promtoolRules writes the rendered rules as a Prometheus rule file beside
// the unit tests and runs promtool on both; the error holds what promtool
// said.
func promtoolRules(t *testing.T, spec RuleSpec) error {
	t.Helper()
	const testsFile = "testdata/alerts_test.yaml"
	raw, err := os.ReadFile(testsFile)
	if err != nil {
		t.Fatal(err)
	}
	// Every alert has a case where it fires and one where it does not.
	var at alertTests
	if err := yaml.Unmarshal(raw, &at); err != nil {
		t.Fatalf("%s: %v", testsFile, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range at.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for name := range wantAlerts {
		if !fires[name] || !quiet[name] {
			t.Errorf("%s: %s has a case where it fires: %v, where it does not: %v; want both", testsFile, name, fires[name], quiet[name])
		}
	}
	if !slices.Equal(at.RuleFiles, []string{"rules.yaml"}) {
		t.Errorf("%s: rule_files %v, want [rules.yaml] (the rendered rules)", testsFile, at.RuleFiles)
	}

	promtool := os.Getenv("PROMTOOL")
	if promtool == "" {
		t.Skip("PROMTOOL unset: make test-deploy builds promtool (bin/promtool-<version>) and runs this with it")
	}
	dir := t.TempDir()
	rules, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("promtool %s: %v\n%s\nrules.yaml:\n%s", strings.Join(args, " "), err, out, rules)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	return nil
}
