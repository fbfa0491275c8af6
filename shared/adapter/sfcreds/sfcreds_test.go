package sfcreds

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

func TestLoadFromSecretDirectory(t *testing.T) {
	dir := t.TempDir()
	td := filepath.Join(dir, "acme")
	if err := os.MkdirAll(td, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{FileTokenURL: "https://acme.my.salesforce.com\n", FileClientID: "id", FileClientSecret: "s3cret"} {
		if err := os.WriteFile(filepath.Join(td, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Source{Dir: dir, Lookup: noEnv}.Load("acme")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenURL != "https://acme.my.salesforce.com" || cfg.ClientID != "id" || cfg.ClientSecret != "s3cret" || cfg.Org != "acme" {
		t.Fatalf("cfg = %+v", cfg)
	}
}

func TestLoadFromEnvironment(t *testing.T) {
	env := map[string]string{"SF_ACME_EU_TOKEN_URL": "https://x.my.salesforce.com", "SF_ACME_EU_CLIENT_ID": "id", "SF_ACME_EU_CLIENT_SECRET": "sec"}
	cfg, err := Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}.Load("acme-eu")
	if err != nil || cfg.ClientSecret != "sec" {
		t.Fatalf("cfg = %+v, %v", cfg, err)
	}
}

func TestMissingCredentialsSayWhereTheyWereLookedFor(t *testing.T) {
	_, err := Source{Dir: "/etc/optout/salesforce", Lookup: noEnv}.Load("initech")
	if !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("err = %v", err)
	}
	want := "tenant initech: no Salesforce credentials configured (looked in /etc/optout/salesforce/initech/ or SF_INITECH_* variables)"
	if err.Error() != want {
		t.Fatalf("err = %q\nwant %q", err, want)
	}
}

func TestPoolRebuildsTheClientWhenTheSecretRotates(t *testing.T) {
	secret := "one"
	built := 0
	p := &Pool{
		Source: Source{Lookup: func(k string) (string, bool) {
			return map[string]string{"SF_A_TOKEN_URL": "https://a.my.salesforce.com", "SF_A_CLIENT_ID": "id", "SF_A_CLIENT_SECRET": secret}[k], true
		}},
		Refresh: time.Nanosecond,
		New: func(context.Context, salesforce.Config) (Client, error) {
			built++
			return nil, nil
		},
	}
	ctx := context.Background()
	_, _ = p.Get(ctx, "a")
	_, _ = p.Get(ctx, "a")
	if built != 1 {
		t.Fatalf("built %d clients for unchanged credentials", built)
	}
	secret = "two"
	_, _ = p.Get(ctx, "a")
	if built != 2 {
		t.Fatalf("built %d clients; want a new one after rotation", built)
	}
}

func noEnv(string) (string, bool) { return "", false }
