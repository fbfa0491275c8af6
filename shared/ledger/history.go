package ledger

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/natsx"
)

// ReadAudit calls fn with every audit record stored on subject (one tenant's
// audit subject), oldest first: the person history operators and compliance
// reviewers read. It stops at the first error of fn. A record that cannot be
// decoded is an error, never skipped: a history with silent gaps is worse
// than none.
//
// The audit stream keeps one subject per tenant, so reading one person's
// history reads the tenant's whole trail.
func ReadAudit(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(AuditRecord) error) error {
	return natsx.ReadSubject(ctx, js, stream, subject, func(msg jetstream.Msg) error {
		var rec AuditRecord
		if err := json.Unmarshal(msg.Data(), &rec); err != nil {
			seq := uint64(0)
			if md, mdErr := msg.Metadata(); mdErr == nil {
				seq = md.Sequence.Stream
			}
			return fmt.Errorf("audit record at %s sequence %d: %w", stream, seq, err)
		}
		return fn(rec)
	})
}
