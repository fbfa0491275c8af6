package cdc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// recordOptedOut reads a record's Email Opt Out from the sandbox.
func (h *harness) recordOptedOut(id string) bool {
	h.t.Helper()
	var rec struct{ HasOptedOutOfEmail bool }
	h.sb.Ctl("GET", "/records/"+id, nil, &rec)
	return rec.HasOptedOutOfEmail
}

// A Lead created later with an address already opted out (a list import, a
// web form) is opted out from the CDC stream, as a person of its own whose
// trail names the person it duplicates; a Lead of another address is not.
func TestNewRecordOfASuppressedAddressOptedOutFromTheStream(t *testing.T) {
	h := newHarness(t, "", func(st *tenant.Settings) { st.DuplicatesByEmail = true })
	orig := h.sb.Put("Contact", "ann@dupes.test")
	_, err := h.lg.Writer(tn, optout.StandardField).Ingest(h.ctx, optout.EventInput{ID: "evt-ann", Action: optout.OptOut,
		OccurredAt: time.Now().Add(-time.Hour), Source: "EMAIL_LINK", SalesConnectID: "sc-ann", SalesforceID: orig, ObjectType: "Contact"})
	require.NoError(t, err)
	h.replica("r1")
	h.streaming()

	other := h.sb.Put("Lead", "zed@dupes.test")
	lead := h.sb.Put("Lead", "Ann@Dupes.test")
	h.until("the new Lead of the suppressed address opted out in Salesforce", func() bool { return h.recordOptedOut(lead) })
	h.optedOutInLedger(lead)
	it, err := h.lg.Get(h.ctx, optout.Key(tn, "", lead), ledger.ViaAlias())
	require.NoError(t, err)
	e := it.Entry
	assert.Equal(t, lead, e.SalesforceID)
	assert.Empty(t, e.SalesConnectID, "a person of its own")
	require.NotNil(t, e.LastEvent)
	assert.True(t, strings.Contains(e.LastEvent.Reason, "duplicate by email of Sales Connect person sc-ann (Contact "+orig+")"), e.LastEvent.Reason)

	// The other Lead came before in the same stream: settled by now.
	assert.False(t, h.recordOptedOut(other), "a Lead of another address was opted out")
	_, err = h.lg.Get(h.ctx, optout.Key(tn, "", other), ledger.ViaAlias())
	assert.True(t, errors.Is(err, ledger.ErrNotFound), "a Lead of another address entered the ledger: %v", err)
}

// Off by default: without the setting, a new Lead of an opted-out address
// is left as it was created.
func TestNewRecordOfASuppressedAddressLeftAloneByDefault(t *testing.T) {
	h := newHarness(t, "", nil)
	orig := h.sb.Put("Contact", "ann@dupes.test")
	_, err := h.lg.Writer(tn, optout.StandardField).Ingest(h.ctx, optout.EventInput{ID: "evt-ann", Action: optout.OptOut,
		OccurredAt: time.Now().Add(-time.Hour), Source: "EMAIL_LINK", SalesConnectID: "sc-ann", SalesforceID: orig, ObjectType: "Contact"})
	require.NoError(t, err)
	marker := h.sb.Put("Contact", "marker@dupes.test")
	h.replica("r1")
	h.streaming()

	lead := h.sb.Put("Lead", "ann@dupes.test")
	h.optOut(marker) // after the Lead: once its edit is applied, the Lead's event was too
	h.appliedFor(marker)
	assert.False(t, h.recordOptedOut(lead), "a duplicate opted out with the setting off")
	_, err = h.lg.Get(h.ctx, optout.Key(tn, "", lead), ledger.ViaAlias())
	assert.True(t, errors.Is(err, ledger.ErrNotFound), "a duplicate entered the ledger with the setting off: %v", err)
}
