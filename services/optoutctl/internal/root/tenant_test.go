package root_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestTenantCommands(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)

	s.Run("tenant", "list").Expect(t, 0).Golden(t, "tenant_list_empty")

	s.Run("tenant", "set", "acme", "--sync=true", "--field", "sales-opt-out").Expect(t, 0).Golden(t, "tenant_set")
	got, err := s.Settings.Get(s.Ctx, "acme")
	if err != nil || !got.SyncEnabled || got.Field != tenant.SalesOptOut || got.TargetField() != tenant.DefaultCustomField {
		t.Fatalf("stored settings after set: %+v, %v", got, err)
	}
	s.Run("tenant", "set", "acme", "--field", "marketing").Expect(t, 2).Golden(t, "tenant_set_bad_field")
	s.Run("tenant", "set", "acme", "--schedule-time", "25:00", "--schedule-zone", "Mars/Olympus").Expect(t, 2).Golden(t, "tenant_set_invalid")
	s.Run("tenant", "set", "acme").Expect(t, 2).Golden(t, "tenant_set_nothing")
	s.Run("tenant", "set", "acme", "-o", "json", "--schedule-time", "21:30").Expect(t, 0).Golden(t, "tenant_set_json")

	// globex chose the sales field, which its org lacks; the pusher recorded
	// it unhealthy (as it does after a failed write), and two opt-outs wait.
	s.Run("tenant", "set", "globex", "--sync=true", "--field=sales-opt-out").Expect(t, 0)
	if err := s.Health.Put(s.Ctx, tenant.Health{Tenant: "globex", Mode: tenant.ModeUnhealthy, Since: testkit.T0.Add(-time.Hour), Until: testkit.T0.Add(time.Minute),
		Reason: "salesforce: check opt-out field Marketo_Sales_Opt_Out__c: OPT_OUT_FIELD_UNUSABLE: field Marketo_Sales_Opt_Out__c: missing on Contact and Lead [permanent-tenant]"}); err != nil {
		t.Fatal(err)
	}
	s.Run("publish", "globex", "--sc", "sc-1", "--occurred-at", testkit.T0.Add(-90*time.Minute).Format(time.RFC3339), "--event-id", "evt-g1").Expect(t, 0)
	s.Run("publish", "globex", "--sc", "sc-2", "--occurred-at", testkit.T0.Add(-time.Minute).Format(time.RFC3339), "--event-id", "evt-g2").Expect(t, 0)
	s.Run("tenant", "show", "globex").Expect(t, 0).Golden(t, "tenant_show_unhealthy")
	s.Run("tenant", "show", "globex", "-o", "json").Expect(t, 0).Golden(t, "tenant_show_unhealthy_json")
	s.Run("tenant", "check", "globex").Expect(t, 4).Golden(t, "tenant_check_not_ready")
	s.Run("tenant", "check", "acme").Expect(t, 0).Golden(t, "tenant_check_ready")
	s.Run("tenant", "check", "acme", "-o", "json").Expect(t, 0).Golden(t, "tenant_check_ready_json")

	// initech has an event but no Salesforce credentials.
	s.Run("publish", "initech", "--sc", "sc-9", "--occurred-at", testkit.T0.Add(-26*time.Hour).Format(time.RFC3339), "--event-id", "evt-i1").Expect(t, 0)
	s.Run("tenant", "show", "initech", "--no-ledger").Expect(t, 0).Golden(t, "tenant_show_no_credentials")
	s.Run("tenant", "show", "acme", "--no-check").Expect(t, 0).Golden(t, "tenant_show_no_check")

	// umbrella has two opt-outs Salesforce has not confirmed, the older 30
	// hours old (asked on a Saturday: no business day has passed yet).
	w := s.Ledger.Writer("umbrella", tenant.Default("umbrella").TargetField())
	for i, age := range []time.Duration{time.Hour, 30 * time.Hour} {
		if _, err := w.Ingest(s.Ctx, optout.EventInput{ID: fmt.Sprintf("evt-u%d", i), Action: optout.OptOut, OccurredAt: testkit.T0.Add(-age),
			Source: "EMAIL_LINK", SalesforceID: fmt.Sprintf("00300000000000%dAAA", i+1), ObjectType: "Contact"}); err != nil {
			t.Fatal(err)
		}
	}
	s.Run("tenant", "show", "umbrella", "--no-check").Expect(t, 0).Golden(t, "tenant_show_compliance_clock")
	s.Run("tenant", "show", "umbrella", "--no-check", "-o", "json").Expect(t, 0).Golden(t, "tenant_show_compliance_clock_json")

	s.Run("tenant", "show", "nobody").Expect(t, 3).Golden(t, "tenant_show_not_found")
	s.Run("tenant", "show", "not.a.tenant").Expect(t, 2)

	s.Run("tenant", "list").Expect(t, 0).Golden(t, "tenant_list")
	s.Run("tenant", "list", "-o", "json").Expect(t, 0).Golden(t, "tenant_list_json")
	s.Run("tenant", "list", "-o", "csv").Expect(t, 0).Golden(t, "tenant_list_csv")

	s.Run("tenant", "set", "acme", "--cdc=true", "--cdc-topic", "/data/OptOutSync__chn").Expect(t, 0).Golden(t, "tenant_set_cdc")
	if got, err := s.Settings.Get(s.Ctx, "acme"); err != nil || !got.CDCEnabled || got.Topic() != "/data/OptOutSync__chn" {
		t.Fatalf("stored settings after --cdc: %+v, %v", got, err)
	}
	s.Run("tenant", "set", "acme", "--cdc-topic", "/event/Nope__e").Expect(t, 2)

	// Duplicates by email: off by default, turned on by its flag alone.
	if got, _ := s.Settings.Get(s.Ctx, "acme"); got.DuplicatesByEmail {
		t.Fatalf("duplicates by email on by default: %+v", got)
	}
	s.Run("tenant", "set", "acme", "--duplicates-by-email").Expect(t, 0).Golden(t, "tenant_set_duplicates")
	if got, err := s.Settings.Get(s.Ctx, "acme"); err != nil || !got.DuplicatesByEmail || !got.CDCEnabled {
		t.Fatalf("stored settings after --duplicates-by-email: %+v, %v", got, err)
	}
	s.Run("tenant", "set", "acme", "--duplicates-by-email=maybe").Expect(t, 2)
}
