// Package e2e_test drives the admin settings page in headless Chromium
// against the admin service as its main wires it (services/admin/app), a
// real pusher, NATS and the Salesforce sandbox: an admin changes the field
// choice, saves, and the next opt-out lands on the new field; then a failing
// prerequisite is explained on the page.
//
// Screenshots go to $OPTOUT_E2E_ARTIFACTS, else to e2e/artifacts/ (ignored
// by git).
package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const password = "correct-horse-battery-staple"

// chromium finds Debian's chromium ($CHROMIUM overrides). Its absence fails
// the test: a browser test that skips itself proves nothing in CI. Only
// the fast tier (-short, make test-short) skips it, as it runs without
// Chromium and servers.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Chromium, NATS and the sandbox: skipped under -short; make test runs it")
	}
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("no Chromium at %s (%v): install it with 'apt-get install -y chromium', or set CHROMIUM", path, err)
	}
	return path
}

func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("OPTOUT_E2E_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is a headless Chromium signed in as alice, with JavaScript off:
// the page must work without it.
type browser struct {
	t   *testing.T
	ctx context.Context // the browser's; each step gets a timeout of its own
}

func openBrowser(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 1000),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	b := &browser{t: t, ctx: bctx}
	// The first call starts the browser; it must not carry a short timeout,
	// which would stop the browser with it. Later steps each get one.
	if _, err := chromedp.Call(bctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	_, err := chromedp.Call(bctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+password))},
	})
	b.call("set the Authorization header", err)
	_, err = chromedp.Call(bctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	b.call("disable JavaScript", err)
	return b
}

func (b *browser) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 20*time.Second)
}

func (b *browser) call(what string, err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	b.call(what, chromedp.Do(ctx, steps...))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	b.call("read "+sel, err)
	return s
}

// checked reads the checked attribute the server rendered.
func (b *browser) checked(id string) bool {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	attrs, err := chromedp.Run(ctx, chromedp.Attributes(chromedp.ID(id)))
	b.call("read #"+id, err)
	_, ok := attrs["checked"]
	return ok
}

// screenshot saves the whole page, and returns it.
func (b *browser) screenshot(name string) []byte {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	b.call("screenshot "+name, err)
	path := filepath.Join(artifacts(b.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return png
}

func TestAdminPageChangesTheFieldOfTheNextOptOut(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startPusher()
	adminURL := s.startAdmin("alice:" + password + "\n")

	b := openBrowser(t, s.Ctx)
	do, text, checked, step, call := b.do, b.text, b.checked, b.step, b.call
	screenshot := func(name string) { b.screenshot(name) }

	do("open the settings page", chromedp.Navigate(adminURL+"/admin/tenants/acme"), chromedp.WaitVisible(chromedp.ID("field-email")))
	if h1 := text("h1"); h1 != "Salesforce sync settings for acme" {
		t.Fatalf("h1 = %q", h1)
	}
	if !checked("field-email") || checked("field-sales") || checked("sync") {
		t.Fatal("a new tenant should show sync off and Email Opt Out chosen")
	}

	// Turn sync on (the field choice applies while it is on), choose the
	// sales opt-out field, save: post, redirect, get.
	do("change the settings and save",
		chromedp.Click(chromedp.ID("sync")),
		chromedp.Click(chromedp.ID("field-sales")),
		chromedp.Click(chromedp.CSS(`form[method="post"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)),
	)
	if got := text(`[role="status"]`); !strings.Contains(got, "Settings saved.") || !strings.Contains(got, "Opt-outs are now written to Marketo_Sales_Opt_Out__c") {
		t.Fatalf("status after saving = %q", got)
	}
	ctx, cancel := step()
	url, err := chromedp.Run(ctx, chromedp.Location())
	cancel()
	call("read the location", err)
	if !strings.HasSuffix(url, "/admin/tenants/acme?saved=1") {
		t.Errorf("after saving the browser is at %s; want the page again (post, redirect, get)", url)
	}
	if !checked("sync") || !checked("field-sales") || checked("field-email") {
		t.Error("the page after saving does not show the saved choice")
	}
	if got := text(".verdict"); !strings.Contains(got, "Ready.") {
		t.Errorf("prerequisites after saving: %q", got)
	}
	screenshot("admin-settings-saved.png")

	stored, err := s.Settings.Get(s.Ctx, "acme")
	if err != nil || !stored.SyncEnabled || stored.Field != tenant.SalesOptOut {
		t.Fatalf("stored settings = %+v, %v", stored, err)
	}
	// Wait until the running pusher has seen the change, then send the next
	// opt-out: it must land on the sales field, not on Email Opt Out.
	s.eventually("the pusher sees the new field", func() bool { return s.Cache.Get("acme").TargetField() == tenant.DefaultCustomField })
	contact := s.Sandbox.Org("acme").Put(sandbox.Record{Type: "Contact", Email: "sam@example.com"}).ID
	s.publish("acme", "sc-e2e", contact, "evt-e2e")
	s.eventually("the opt-out on the sales field", func() bool {
		r, _ := s.Sandbox.Org("acme").Get(contact)
		return r.CustomOptOut
	})
	if r, _ := s.Sandbox.Org("acme").Get(contact); r.HasOptedOutOfEmail {
		t.Error("the opt-out was also written to HasOptedOutOfEmail, which marketing shares")
	}
	var writes []string
	for _, c := range s.Sandbox.Org("acme").Calls() {
		// The sales field is read and written in one composite.
		if c.Route == sandbox.RouteCollectionsUpdate || c.Route == sandbox.RouteComposite {
			writes = append(writes, c.Path)
		}
	}
	if len(writes) == 0 {
		t.Error("no write reached the sandbox")
	}

	// The field disappears from the org (say, an admin uninstalled it): the
	// page explains what is wrong and what to do.
	s.Sandbox.Org("acme").SetCustomField(false, false)
	do("check again",
		chromedp.Click(chromedp.CSS(`#prereq-h ~ form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.verdict.error`)),
	)
	section := text(`section[aria-labelledby="prereq-h"]`)
	for _, want := range []string{
		"Not ready.", "Opt-outs wait until the problems below are fixed. None is lost.",
		"Contact missing; Lead missing",
		"Marketo_Sales_Opt_Out__c is missing on Contact and Lead.",
		"Install the sales opt-out checkbox Marketo_Sales_Opt_Out__c on Lead and Contact",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("prerequisites section lacks %q:\n%s", want, section)
		}
	}
	if got := text(`.notice.warn`); !strings.Contains(got, "Salesforce is not ready for this tenant") {
		t.Errorf("no warning at the top of the page: %q", got)
	}
	screenshot("admin-prerequisite-failing.png")
}

// TestChartsAndProofInTheBrowser: after opt-outs went through the real
// pusher to the sandbox, the tenant page draws its charts (SVG from the
// server, JavaScript off), and an admin finds a person's proof from it.
// The screenshot of the charts is checked for their marks' colours, so a
// chart that renders as an empty box fails.
func TestChartsAndProofInTheBrowser(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startPusher()
	adminURL := s.startAdmin("alice:" + password + "\n")
	var contacts []string
	for i := range 3 {
		c := s.Sandbox.Org("acme").Put(sandbox.Record{Type: "Contact", Email: fmt.Sprintf("chart%d@example.com", i)}).ID
		contacts = append(contacts, c)
		s.publish("acme", fmt.Sprintf("sc-chart-%d", i), c, fmt.Sprintf("evt-chart-%d", i))
	}
	s.eventually("the opt-outs in Salesforce", func() bool {
		for _, c := range contacts {
			if r, _ := s.Sandbox.Org("acme").Get(c); !r.HasOptedOutOfEmail {
				return false
			}
		}
		return true
	})

	b := openBrowser(t, s.Ctx)
	b.do("open the tenant page", chromedp.Navigate(adminURL+"/admin/tenants/acme"), chromedp.WaitVisible(chromedp.ID("charts-h")))
	count := func(sel string) int {
		t.Helper()
		ctx, cancel := b.step()
		defer cancel()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll(`+strconv.Quote(sel)+`).length`))
		b.call("count "+sel, err)
		return n
	}
	if n := count("svg.chart"); n != 5 {
		t.Fatalf("%d charts on the page; want 5", n)
	}
	if n := count("#chart-honour circle.point"); n < 1 {
		t.Errorf("time to honour has no point for the hour of the opt-outs")
	}
	if n := count("#chart-sources rect.bar"); n < 1 {
		t.Errorf("opt-outs by source has no bar")
	}
	shoot := func(sel, name string) image.Image {
		t.Helper()
		ctx, cancel := b.step()
		defer cancel()
		shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
		b.call("screenshot "+sel, err)
		if err := os.WriteFile(filepath.Join(artifacts(t), name), shot, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		b.call("decode the screenshot of "+sel, err)
		return img
	}
	shoot(`section[aria-labelledby="charts-h"]`, "admin-charts.png")
	// The bar of the three opt-outs in the by-source chart, in the first
	// colour of chartspanel.Palette: far more pixels than its legend key
	// (about 200), so a chart drawn without its marks fails.
	if n := pixels(shoot("#chart-sources", "admin-chart-sources.png"), color.RGBA{0x1d, 0x4e, 0x89, 0xff}); n < 1000 {
		t.Errorf("the by-source chart's screenshot has %d pixels of its bar colour; want its bar drawn", n)
	}
	b.do("look a person up from the tenant page",
		chromedp.SendKeys(chromedp.ID("proof-id"), "sc-chart-1"),
		chromedp.Click(chromedp.CSS(`section[aria-labelledby="proof-h"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section.person table`)),
	)
	trail := b.text(`section.person`)
	for _, want := range []string{"Ledger entry", "evt-chart-1: UNSUBSCRIBE by EMAIL_LINK", "HasOptedOutOfEmail = true, confirmed by Salesforce"} {
		if !strings.Contains(trail, want) {
			t.Errorf("the proof lacks %q:\n%s", want, trail)
		}
	}
	b.screenshot("admin-person-proof.png")
}

// pixels counts the pixels of img within a small distance of c
// (antialiasing blends the edges).
func pixels(img image.Image, c color.RGBA) int {
	n := 0
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if near(r>>8, c.R) && near(g>>8, c.G) && near(b>>8, c.B) {
				n++
			}
		}
	}
	return n
}

func near(a uint32, b uint8) bool { return a+8 >= uint32(b) && a <= uint32(b)+8 }
