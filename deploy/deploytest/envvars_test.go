package deploytest

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Variables the chart sets itself (from other values or Secrets), and
// variables it deliberately does not expose.
var (
	chartManaged = []string{
		"NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED_FILE", "NATS_CREDS_FILE",
		"NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY",
		"OPTOUT_ADMIN_ADDR", "OPTOUT_ADMIN_TOKEN_FILE", "OPTOUT_ADMIN_USERS_FILE", "OPTOUT_SUPPRESSION_TOKENS_FILE",
		"OPTOUT_SF_CREDENTIALS_DIR", "OPTOUT_REDIS_URL", "OPTOUT_EMAIL_HASH_KEY_FILE",
	}
	notExposed = map[string]string{
		"OPTOUT_ADMIN_TOKEN":    "a secret as a plain value; the chart mounts OPTOUT_ADMIN_TOKEN_FILE from a Secret",
		"OPTOUT_REPLICA_ID":     "the default (the pod's hostname plus a random suffix) is what a Deployment wants",
		"OPTOUT_EMAIL_HASH_KEY": "a secret as a plain value; the chart mounts OPTOUT_EMAIL_HASH_KEY_FILE from a Secret",
		// Issue 20's endpoint policy (shared/adapter/sfcreds), now listed by docs/configuration.md.
		"OPTOUT_SF_ALLOWED_HOSTS":       "not in the chart yet: the default (the tenant's My Domain and Salesforce's own domains) is what production wants",
		"OPTOUT_SF_INSECURE_HTTP_HOSTS": "development only: credentials over plain http must not be one value away in production",
	}
)

// Where each service reads its variables: common ones are read by both
// through shared packages.
var varSources = map[string][]string{
	"common":     {"shared/adapter/natsx", "shared/platform/logx", "shared/adapter/salesforce"},
	"pusher":     {"services/pusher"},
	"reconciler": {"services/reconciler"},
	"admin":      {"services/admin"},
}

var (
	loaderCall = regexp.MustCompile(`\.(?:String|Int|Float|Duration|Bool|HostPort|File|Required|Computed)\(\s*"((?:OPTOUT|NATS|LOG)_[A-Z0-9_]+)"`)
	envConst   = regexp.MustCompile(`Env[A-Za-z]*\s*=\s*"((?:OPTOUT|NATS|LOG)_[A-Z0-9_]+)"`)
)

// varsRead scans the non-test Go files under dirs for the variables read
// through shared/config's Loader (and env-name constants).
func varsRead(t *testing.T, root string, dirs []string) map[string]bool {
	out := map[string]bool{}
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && (e.Name() == "testdata" || e.Name() == "cmd" || strings.HasSuffix(e.Name(), "test")) {
				return filepath.SkipDir // natstest, locktest, testdata; cmd/ holds benchmarks, not the service
			}
			if e.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, re := range []*regexp.Regexp{loaderCall, envConst} {
				for _, m := range re.FindAllSubmatch(b, -1) {
					out[string(m[1])] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// schemaVars lists the variable names values.schema.json accepts in each
// config block.
func schemaVars(t *testing.T, root string) map[string]map[string]bool {
	b, err := os.ReadFile(filepath.Join(root, ChartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	type props struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	var s props
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	keys := func(raw json.RawMessage) map[string]bool {
		var p props
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for k := range p.Properties {
			out[k] = true
		}
		return out
	}
	component := func(name string) map[string]bool {
		var p props
		if err := json.Unmarshal(s.Properties[name], &p); err != nil {
			t.Fatal(err)
		}
		return keys(p.Properties["config"])
	}
	return map[string]map[string]bool{
		"common":     keys(s.Properties["config"]),
		"pusher":     component("pusher"),
		"reconciler": component("reconciler"),
		"admin":      component("admin"),
	}
}

// TestChartCoversEveryVariable: every variable the pusher and the
// reconciler read is settable through the chart in the right block (or set
// by the chart, or knowingly left out), and the chart accepts no variable
// that no service reads. A variable added to a service without a chart
// change fails here.
func TestChartCoversEveryVariable(t *testing.T) {
	root := repoRoot(t)
	schema := schemaVars(t, root)
	read := map[string]map[string]bool{}
	for c, dirs := range varSources {
		read[c] = varsRead(t, root, dirs)
	}
	if len(read["common"]) < 10 || len(read["pusher"]) < 10 || len(read["reconciler"]) < 10 {
		t.Fatalf("the source scan found too little (%d/%d/%d variables): has the config loader changed?", len(read["common"]), len(read["pusher"]), len(read["reconciler"]))
	}
	templates := readTemplates(t, root)
	for c, vars := range read {
		for v := range vars {
			switch {
			case slices.Contains(chartManaged, v):
				if !strings.Contains(templates, v) {
					t.Errorf("%s is listed as set by the chart but no template sets it", v)
				}
			case notExposed[v] != "":
			case schema[c][v]:
			default:
				where := "nowhere"
				for sc, vs := range schema {
					if vs[v] {
						where = "the " + sc + " block"
					}
				}
				t.Errorf("%s (read by %s) is not settable in the %s config block of the chart (found in %s)", v, c, c, where)
			}
		}
	}
	for c, vars := range schema {
		for v := range vars {
			if !read[c][v] {
				t.Errorf("the chart's %s config block accepts %s, which no %s code reads", c, v, c)
			}
		}
	}
}

func readTemplates(t *testing.T, root string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(root, ChartDir, "templates", "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// TestReadmeVariablesReachTheChart: every variable the configuration
// reference and the READMEs' tables document is either settable through the
// chart or knowingly not.
func TestReadmeVariablesReachTheChart(t *testing.T) {
	root := repoRoot(t)
	schema := schemaVars(t, root)
	covered := func(v string) bool {
		if strings.HasPrefix(v, "OTEL_") || slices.Contains(chartManaged, v) || notExposed[v] != "" {
			return true
		}
		for _, vs := range schema {
			if vs[v] {
				return true
			}
		}
		return false
	}
	var seen []string
	for _, readme := range []string{"docs/configuration.md", "README.md", "services/reconciler/README.md", "services/optoutctl/README.md"} {
		b, err := os.ReadFile(filepath.Join(root, readme))
		if err != nil {
			t.Logf("%s: %v (skipped)", readme, err)
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "|") {
				continue
			}
			cells := strings.Split(line, "|")
			if len(cells) < 2 {
				continue
			}
			for _, m := range regexp.MustCompile("`((?:OPTOUT|NATS|LOG|OTEL)_[A-Z0-9_]+)`").FindAllStringSubmatch(cells[1], -1) {
				seen = append(seen, m[1])
				if !covered(m[1]) {
					t.Errorf("%s documents %s, which the chart cannot set", readme, m[1])
				}
			}
		}
	}
	sort.Strings(seen)
	t.Logf("documented variables checked: %v", slices.Compact(seen))
}
