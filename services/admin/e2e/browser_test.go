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
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
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

func TestAdminPageChangesTheFieldOfTheNextOptOut(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startPusher()
	adminURL := s.startAdmin("alice:" + password + "\n")

	alloc, cancelAlloc := chromedp.NewExecAllocator(s.Ctx,
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
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	// The first call starts the browser; it must not carry a short timeout,
	// which would stop the browser with it. Later steps each get one.
	if _, err := chromedp.Call(browser, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(browser, 20*time.Second) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	// checked reads the checked attribute the server rendered.
	checked := func(id string) bool {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		attrs, err := chromedp.Run(ctx, chromedp.Attributes(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		_, ok := attrs["checked"]
		return ok
	}
	screenshot := func(name string) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(artifacts(t), name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	call := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Sign in with basic auth, and run no JavaScript: the page must work
	// without it.
	_, err := chromedp.Call(browser, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+password))},
	})
	call("set the Authorization header", err)
	_, err = chromedp.Call(browser, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	call("disable JavaScript", err)

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
