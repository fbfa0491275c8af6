package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// suppressionEntries is the ledger size the chart's default
// admin.suppressionResources are for (values.yaml says so).
const suppressionEntries = 1_000_000

// measuredAdminMiB reads bench/suppression.md, the measurement the chart's
// admin memory comes from: the admin's RSS while serving (once its index
// of the ledger is built, and after the drive, the higher), and the
// highest peak the run saw (the start-up read or the drive).
func measuredAdminMiB(t *testing.T) (entries int, serving, peak float64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "bench", "suppression.md"))
	if err != nil {
		t.Fatal(err)
	}
	num := func(re string) []float64 {
		m := regexp.MustCompile(re).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("bench/suppression.md has no row matching %s", re)
		}
		var out []float64
		for _, s := range m[1:] {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
		return out
	}
	entries = int(num(`\| ledger entries \| (\d+) `)[0])
	loaded := num(`\| admin RSS once ready / peak during the start-up read \| (\d+) MiB / (\d+) MiB`)
	after := num(`\| admin RSS after the drive / peak \| (\d+) MiB / (\d+) MiB`)
	return entries, max(loaded[0], after[0]), max(loaded[1], after[1])
}

// TestAdminMemoryFitsTheSuppressionIndex: with the suppression API on, the
// admin container gets admin.suppressionResources, and their defaults hold
// what bench/suppression.md measured at 1,000,000 entries: the request at
// least the RSS while serving, the limit the peak with a quarter to spare (a
// kill at the limit during the start-up read would restart the read).
// Without the API the page-only resources stay.
func TestAdminMemoryFitsTheSuppressionIndex(t *testing.T) {
	entries, serving, peak := measuredAdminMiB(t)
	if entries != suppressionEntries {
		t.Fatalf("bench/suppression.md measured %d entries; the chart's default is sized for %d", entries, suppressionEntries)
	}
	_, on := renderChecked(t, nil, []string{"admin.auth.existingSecret=optout-admin", "admin.auth.suppressionTokensKey=suppression-tokens"})
	res := on.Deployment(ReleaseName + "-admin").Spec.Template.Spec.Containers[0].Resources
	mib := func(q resource.Quantity) float64 { return float64(q.Value()) / (1 << 20) }
	if got := mib(*res.Requests.Memory()); got < serving {
		t.Errorf("admin memory request with the suppression API: %.0f MiB, below the %.0f MiB measured while serving", got, serving)
	}
	if got := mib(*res.Limits.Memory()); got < peak*1.25 {
		t.Errorf("admin memory limit with the suppression API: %.0f MiB, want at least %.0f (the measured peak %.0f MiB and a quarter)", got, peak*1.25, peak)
	}
	_, off := renderChecked(t, nil, []string{"admin.auth.existingSecret=optout-admin", "admin.auth.tokenKey=token"})
	offRes := off.Deployment(ReleaseName + "-admin").Spec.Template.Spec.Containers[0].Resources
	if offRes.Limits.Memory().Cmp(*res.Limits.Memory()) >= 0 {
		t.Errorf("without the suppression API the admin gets %s, as much as with it (%s)", offRes.Limits.Memory(), res.Limits.Memory())
	}
}
