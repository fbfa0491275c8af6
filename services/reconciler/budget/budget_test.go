package budget_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
)

func TestTransportRefusesTheCallOverTheLimit(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	hc := &http.Client{Transport: budget.Transport{}}
	b := budget.New(2)
	ctx := budget.WithKind(budget.With(context.Background(), b), budget.Write)
	get := func(path string) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	for range 2 {
		if err := get("/services/data/v62.0/limits"); err != nil {
			t.Fatal(err)
		}
	}
	// Token requests are free.
	if err := get("/services/oauth2/token"); err != nil {
		t.Fatal(err)
	}
	if err := get("/services/data/v62.0/limits"); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("third call: %v; want ErrExhausted", err)
	}
	if hits != 3 || b.Spent() != 2 || b.SpentOn(budget.Write) != 2 || !b.Exhausted() || b.Remaining() != 0 {
		t.Fatalf("hits %d spent %d exhausted %v", hits, b.Spent(), b.Exhausted())
	}
	// A context without a budget is not counted.
	req, _ := http.NewRequest("GET", srv.URL, nil)
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
}
