package csvx_test

import (
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/platform/csvx"
)

func TestFormulasAreEscaped(t *testing.T) {
	var b strings.Builder
	w, err := csvx.New(&b, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range [][]string{{"=HYPERLINK(1)", "plain"}, {"-1", "+x"}, {"@SUM", ""}} {
		if err := w.Write(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "a,b\n'=HYPERLINK(1),plain\n'-1,'+x\n'@SUM,\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
