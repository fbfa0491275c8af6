package tenantcmd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// optional is a flag that remembers whether it was given, so "tenant set"
// changes only what the operator named.
type optional struct {
	value string
	set   bool
	bool  bool
}

func (o *optional) String() string { return o.value }
func (o *optional) Set(v string) error {
	o.value, o.set = v, true
	return nil
}
func (o *optional) Type() string {
	if o.bool {
		return "bool"
	}
	return "string"
}

func setCmd(inv *cli.Invocation) *cobra.Command {
	sync, cdc, dupes := &optional{bool: true}, &optional{bool: true}, &optional{bool: true}
	field, custom, at, zone, policy, topic := &optional{}, &optional{}, &optional{}, &optional{}, &optional{}, &optional{}
	cmd := &cobra.Command{
		Use:   "set <tenant> [--sync=true|false] [--field email-opt-out|sales-opt-out] [--custom-field NAME] [--schedule-time HH:MM] [--schedule-zone ZONE] [--conflict-policy optout-wins|latest-wins] [--cdc=true|false] [--cdc-topic TOPIC] [--duplicates-by-email=true|false]",
		Short: "change a tenant's settings (creates them from the defaults for a new tenant)",
		Long: `Only the settings named by flags change. The write is a compare-and-set, so a
change made meanwhile on the admin page is kept, not overwritten. The pusher
applies the new settings to the next opt-out, without a restart.

With sync off, unsubscribes still go to HasOptedOutOfEmail whatever the field
choice; the choice applies while sync is on. After choosing sales-opt-out, run
'optoutctl tenant check <tenant>' to see that Salesforce is ready for it.`,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			var syncOn bool
			if sync.set {
				b, err := strconv.ParseBool(sync.value)
				if err != nil {
					return cli.Usagef("--sync=%q: want true or false", sync.value)
				}
				syncOn = b
			}
			var cdcOn bool
			if cdc.set {
				b, err := strconv.ParseBool(cdc.value)
				if err != nil {
					return cli.Usagef("--cdc=%q: want true or false", cdc.value)
				}
				cdcOn = b
			}
			var dupesOn bool
			if dupes.set {
				b, err := strconv.ParseBool(dupes.value)
				if err != nil {
					return cli.Usagef("--duplicates-by-email=%q: want true or false", dupes.value)
				}
				dupesOn = b
			}
			var f tenant.Field
			if field.set {
				var ok bool
				if f, ok = tenantstatus.ParseFieldFlag(field.value); !ok {
					return cli.Usagef("--field %q: want %s or %s", field.value, tenantstatus.FlagEmailOptOut, tenantstatus.FlagSalesOptOut)
				}
			}
			if !sync.set && !field.set && !custom.set && !at.set && !zone.set && !policy.set && !cdc.set && !topic.set && !dupes.set {
				return cli.Usagef("nothing to change: give at least one of --sync, --field, --custom-field, --schedule-time, --schedule-zone, --conflict-policy, --cdc, --cdc-topic, --duplicates-by-email")
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			s, rev, err := c.Tenants.Update(ctx, t, func(s *tenant.Settings) error {
				if sync.set {
					s.SyncEnabled = syncOn
				}
				if field.set {
					s.Field = f
				}
				if custom.set {
					s.CustomField = custom.value
				}
				if at.set {
					s.ScheduleTime = at.value
				}
				if zone.set {
					s.ScheduleZone = zone.value
				}
				if policy.set {
					s.ConflictPolicy = policy.value
				}
				if cdc.set {
					s.CDCEnabled = cdcOn
				}
				if topic.set {
					s.CDCTopic = topic.value
				}
				if dupes.set {
					s.DuplicatesByEmail = dupesOn
				}
				if err := s.Validate(); err != nil {
					return cli.Usagef("tenant %s: %s", t, strings.ReplaceAll(err.Error(), "\n", "; "))
				}
				return nil
			})
			if err != nil {
				if errors.Is(err, tenant.ErrChanged) {
					return cli.Failf(err, "tenant %s: settings kept changing while saving; run the command again", t)
				}
				return conn.Wrap(err, "tenant "+t)
			}
			out := struct {
				Tenant      string          `json:"tenant"`
				Revision    uint64          `json:"revision"`
				Settings    tenant.Settings `json:"settings"`
				TargetField string          `json:"targetField"`
			}{t, rev, s, s.TargetField()}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, out)
			}
			fmt.Fprintf(inv.Stdout, "tenant %s updated (revision %d): sync %s, field %s (%s), nightly at %s %s, conflict policy %s\n",
				t, rev, onOff(s.SyncEnabled), tenantstatus.FieldFlag(s.Field), fieldName(s), s.ScheduleTime, s.ScheduleZone, s.ConflictPolicy)
			fmt.Fprintf(inv.Stdout, "opt-outs are now written to %s\n", s.TargetField())
			if s.CDCEnabled {
				fmt.Fprintf(inv.Stdout, "Salesforce-side changes stream in seconds from %s (Change Data Capture%s); see optoutctl reconcile status %s\n",
					s.Topic(), map[bool]string{true: "", false: ", once sync is on"}[s.SyncEnabled], t)
			}
			if s.DuplicatesByEmail {
				fmt.Fprintf(inv.Stdout, "each opt-out also goes to every Lead and Contact with the same email address\n")
			}
			if s.TargetField() != tenant.StandardField {
				fmt.Fprintf(inv.Stdout, "check that Salesforce is ready for it: optoutctl tenant check %s\n", t)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.Var(sync, "sync", "sync with Salesforce (the nightly reconcile): true or false")
	fs.Lookup("sync").NoOptDefVal = "true"
	fs.Var(field, "field", "opt-out field: email-opt-out (HasOptedOutOfEmail, shared with marketing) or sales-opt-out (the custom field)")
	fs.Var(custom, "custom-field", "API name of the sales opt-out field (default "+tenant.DefaultCustomField+")")
	fs.Var(at, "schedule-time", "time of the nightly sync, HH:MM 24-hour")
	fs.Var(zone, "schedule-zone", "IANA time zone of the schedule, e.g. America/Los_Angeles")
	fs.Var(policy, "conflict-policy", "nightly conflict policy: optout-wins or latest-wins")
	fs.Var(cdc, "cdc", "stream Salesforce-side changes in seconds (Change Data Capture, needs --sync): true or false")
	fs.Lookup("cdc").NoOptDefVal = "true"
	fs.Var(topic, "cdc-topic", "CDC topic or channel (default "+tenant.DefaultCDCTopic+"; e.g. /data/OptOutSync__chn)")
	fs.Var(dupes, "duplicates-by-email", "apply each opt-out to every Lead and Contact with the same email address, each recorded as its own person: true or false")
	fs.Lookup("duplicates-by-email").NoOptDefVal = "true"
	cli.CompleteFlag(cmd, "sync", "true", "false")
	cli.CompleteFlag(cmd, "duplicates-by-email", "true", "false")
	cli.CompleteFlag(cmd, "cdc", "true", "false")
	cli.CompleteFlag(cmd, "field", tenantstatus.FlagEmailOptOut, tenantstatus.FlagSalesOptOut)
	cli.CompleteFlag(cmd, "conflict-policy", tenant.PolicyOptOutWins, tenant.PolicyLatestWins)
	return cmd
}
