package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// writeReport writes the run's report (bench/chaos.md) to path.
func writeReport(path string, rep *report) error {
	verdict := "PASS"
	if rep.problems() != 0 {
		verdict = "FAIL"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Chaos run: random histories through two pusher replicas\n\n")
	fmt.Fprintf(&b, "`make chaos` (`go run ./bench/chaos`, seed %d). ", rep.seed)
	fmt.Fprintf(&b, "Random histories of 1–4 opt-outs and resubscribes per person with past timestamps (one in six reusing an earlier stamp of the person: a tie), one in ten carrying only the Salesforce id; ")
	fmt.Fprintf(&b, "published shuffled, one in ten again under the same Nats-Msg-Id and one in ten again under another; two pusher replicas, one killed after its %dth write reached Salesforce; ", rep.KilledAfterCalls)
	fmt.Fprintf(&b, "sandbox faults: 15%% of collections calls answer 503 (bounded), 5%% drop the connection after the write, `UNABLE_TO_LOCK_ROW` twice on some records, every token expired (401) half-way. ")
	fmt.Fprintf(&b, "Half the persons are in a tenant on the sales opt-out field, half on Email Opt Out. Reference model: the sales field ends at the newest wish (on a tie the opt-out wins); Email Opt Out ends true once any opt-out exists and is never cleared from here.\n\n")
	fmt.Fprintf(&b, "| what | count |\n|---|---|\n")
	for _, row := range []struct {
		k string
		v any
	}{
		{"persons", rep.Persons}, {"events", rep.Events}, {"messages published", rep.Published},
		{"… of which same-id duplicates", rep.Duplicates}, {"… of which replays under another id", rep.Replays},
		{"collections calls", rep.CollectionCalls}, {"records written", rep.collectionRecords}, {"calls answered by an injected fault", rep.Faulted},
		{"time to settle", rep.Elapsed.Round(time.Millisecond)},
		{"**lost** opt-outs (model wants true, Salesforce false)", rep.Lost},
		{"**reverted** (the ledger's wish is not the newest)", rep.Reverted},
		{"resubscribes not honoured", rep.IgnoredResub},
		{"**double effects** (an event or audit record twice, a change without a record, a person split)", rep.DoubleEffects},
		{"field the tenant did not choose written", rep.OtherField},
		{"persons not settled on the model's value", rep.Unsettled},
		{"events missing from the ledger", rep.UnfoldedEvents},
	} {
		fmt.Fprintf(&b, "| %s | %v |\n", row.k, row.v)
	}
	fmt.Fprintf(&b, "\nVerdict: **%s**\n", verdict)
	if len(rep.examples) > 0 {
		fmt.Fprintf(&b, "\nFirst differences:\n\n```\n%s\n```\n", strings.Join(rep.examples, "\n"))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
