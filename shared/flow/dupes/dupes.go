// Package dupes applies a person's opt-out to the other Leads and Contacts
// with the same email address (tenant setting DuplicatesByEmail, off by
// default): real orgs hold duplicates, and an address that asked not to be
// emailed must not be emailed through another record of it.
//
// Each duplicate becomes a person of its own in the ledger, opted out by an
// event of its own folded through the one state machine (optout.Fold via
// ledger.Writer.Ingest), whose reason names the person it is a duplicate
// of; the Salesforce write is then the ordinary one (sfwrite, by whichever
// writer pushes the dirty person). Three callers: the pusher once an opt-out
// is confirmed in Salesforce, the CDC subscriber for a Lead or Contact
// created (or given a new address) after the opt-out, and the nightly run
// for what the other two missed.
//
// Why a SOQL lookup by email (spec §5) and not the Consent API (§12): the
// Consent API writes HasOptedOutOfEmail on every record with the address,
// which a tenant that chose the separate sales field does not want (and
// cannot write its custom field at all); it writes outside the write
// protocol, so the duplicates would have no ledger entry, no claim, no
// trail; it ignores converted Leads only on read, needs an extra permission
// and answers 200 with errors inside. We store only keyed email hashes, so
// the address is taken from Salesforce's own records (the opted-out
// person's Email, or a change event's while it is processed) and used only
// inside a query.
//
// Resubscribes: an explicit resubscribe applies to the person who asked,
// and only to it. Duplicates opted out on its behalf stay opted out (an
// opt-out is never silently reverted; the address stays suppressed while
// any record of it is), each lifted by its own explicit resubscribe. Only
// an opt-out a person expressed itself (IsSource) spreads, so a
// duplicate's opt-out never comes back to the person who resubscribed.
package dupes

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sort"
	"strings"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// EventPrefix starts the id of every event that opts out a duplicate:
// "dup:<the source's deciding event>:<the duplicate's record id>", the same
// however often it is found, so finding it again changes nothing.
const EventPrefix = "dup:"

// Salesforce is what the lookups need of the tenant's client.
type Salesforce interface {
	QueryIDs(ctx context.Context, sobjectType string, fields, ids []string, opts ...salesforce.QueryOption) iter.Seq2[salesforce.Record, error]
	QueryEmails(ctx context.Context, sobjectType string, fields, emails []string, and string, opts ...salesforce.QueryOption) iter.Seq2[salesforce.Record, error]
}

// Record is a Lead or Contact and its address as Salesforce holds it.
type Record struct {
	ID    string // 18 characters
	Type  string // Contact | Lead
	Email string
}

// IsSource reports whether e's opt-out goes to its duplicates: an opt-out
// in force on a Salesforce record, expressed by the person itself (its
// event, or a mark learnt from its own record), not made on another
// person's behalf.
func IsSource(e optout.Entry) bool {
	return e.OptedOut && e.SalesforceID != "" && e.MergedInto == "" && !strings.HasPrefix(e.DecidedBy, EventPrefix)
}

// Result says what Apply did.
type Result struct {
	// Keys and IDs of the duplicates whose opt-out was recorded now
	// (their writes are due).
	Keys, IDs []string
	// Calls counts the queries asked (a long list of addresses or ids may
	// take more than one Salesforce call each).
	Calls int
}

// Flow applies opt-outs to duplicates for one tenant.
type Flow struct {
	Tenant string
	SF     Salesforce
	Ledger *ledger.Ledger
	// Writer records the duplicates' opt-outs (the caller's: fenced for a
	// run, guarded for the CDC subscriber, plain for the pusher).
	Writer *ledger.Writer
}

// Apply finds the records sharing an address with known (records whose
// address the caller holds, from a change event) or with the records ids
// (whose address is read from Salesforce), and records an opt-out for each
// of them that shares its address with a source person (IsSource) and is
// not opted out already.
func (f Flow) Apply(ctx context.Context, known []Record, ids []string) (Result, error) {
	var res Result
	read, calls, err := emails(ctx, f.SF, ids)
	res.Calls += calls
	if err != nil {
		return res, err
	}
	seed := append(append([]Record(nil), known...), read...)
	var addrs []string
	for _, r := range seed {
		if r.Email != "" {
			addrs = append(addrs, r.Email)
		}
	}
	if len(addrs) == 0 {
		return res, nil
	}
	all, calls, err := matching(ctx, f.SF, addrs)
	res.Calls += calls
	if err != nil {
		return res, err
	}
	groups := map[string]map[string]Record{}
	for _, r := range append(seed, all...) {
		k := strings.ToLower(strings.TrimSpace(r.Email))
		if k == "" {
			continue
		}
		if groups[k] == nil {
			groups[k] = map[string]Record{}
		}
		groups[k][r.ID] = r
	}
	addrKeys := make([]string, 0, len(groups))
	for k := range groups {
		addrKeys = append(addrKeys, k)
	}
	sort.Strings(addrKeys)
	done := map[string]bool{}
	for _, k := range addrKeys {
		if err := f.group(ctx, groups[k], done, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

type member struct {
	rec   Record
	key   string
	entry optout.Entry
	found bool
}

// group records the opt-outs of one address's records.
func (f Flow) group(ctx context.Context, recs map[string]Record, done map[string]bool, res *Result) error {
	var members []member
	var source *member
	for _, r := range recs {
		it, err := f.Ledger.Get(ctx, optout.Key(f.Tenant, "", r.ID), ledger.ViaAlias(), ledger.FollowMerges())
		m := member{rec: r}
		switch {
		case errors.Is(err, ledger.ErrNotFound):
		case err != nil:
			return fmt.Errorf("duplicates: read %s: %w", r.ID, err)
		default:
			m.key, m.entry, m.found = it.Key, it.Entry, true
		}
		members = append(members, m)
	}
	// The newest opt-out a person expressed is the one the duplicates follow
	// (a tie goes to the smaller key, so every caller picks the same).
	for i := range members {
		m := &members[i]
		if !m.found || !IsSource(m.entry) {
			continue
		}
		if source == nil || m.entry.DecidedAt.After(source.entry.DecidedAt) ||
			(m.entry.DecidedAt.Equal(source.entry.DecidedAt) && m.key < source.key) {
			source = m
		}
	}
	if source == nil {
		return nil
	}
	for _, m := range members {
		if m.found && (m.key == source.key || m.entry.OptedOut || done[m.key]) {
			continue
		}
		if m.found && m.entry.DecidedAt.After(source.entry.DecidedAt) {
			// The record's own wish is newer (it resubscribed itself after
			// the person's opt-out): it stands, and folding the older
			// opt-out would still set Email Opt Out, which is never cleared.
			continue
		}
		if m.found && m.entry.SalesforceID != m.rec.ID {
			// The record is an alias of a person living on another record
			// (a converted Lead): that record is the one that counts.
			continue
		}
		r, err := f.Writer.Ingest(ctx, f.event(source, m.rec))
		if err != nil {
			return fmt.Errorf("duplicates: record %s: %w", m.rec.ID, err)
		}
		done[r.Key] = true
		if r.Won {
			res.Keys, res.IDs = append(res.Keys, r.Key), append(res.IDs, m.rec.ID)
		}
	}
	return nil
}

// event is the opt-out of duplicate rec on behalf of source: ordered at
// the source's opt-out, so a newer explicit resubscribe of the duplicate
// itself still stands, and in the source's trace.
func (f Flow) event(source *member, rec Record) optout.EventInput {
	s := source.entry
	who := s.ObjectType + " " + s.SalesforceID
	if s.SalesConnectID != "" {
		who = "Sales Connect person " + s.SalesConnectID + " (" + who + ")"
	}
	return optout.EventInput{
		ID:           EventPrefix + s.DecidedBy + ":" + rec.ID,
		Action:       optout.OptOut,
		OccurredAt:   s.DecidedAt,
		Source:       s.Source,
		Reason:       "duplicate by email of " + who + ": same email address, opted out on its behalf",
		SalesforceID: rec.ID,
		ObjectType:   rec.Type,
		TraceID:      s.TraceID,
		TraceParent:  s.TraceParent,
	}
}

// emails reads the address of each record by id.
func emails(ctx context.Context, sf Salesforce, ids []string) ([]Record, int, error) {
	byType := map[string][]string{}
	for _, id := range ids {
		if t := sfid.ObjectType(id); t != "" {
			byType[t] = append(byType[t], id)
		}
	}
	var out []Record
	calls := 0
	for _, t := range []string{"Contact", "Lead"} {
		if len(byType[t]) == 0 {
			continue
		}
		calls++
		for rec, err := range sf.QueryIDs(ctx, t, []string{"Id", "Email"}, byType[t]) {
			if err != nil {
				return nil, calls, fmt.Errorf("duplicates: read the address of %ss: %w", t, err)
			}
			out = append(out, Record{ID: rec.ID, Type: t, Email: rec.String("Email")})
		}
	}
	return out, calls, nil
}

// matching lists the Contacts and Leads with one of addrs. A converted
// Lead is left out: it can no longer be written, and the Contact it became
// is among the Contacts.
func matching(ctx context.Context, sf Salesforce, addrs []string) ([]Record, int, error) {
	var out []Record
	calls := 0
	for _, q := range []struct{ t, and string }{{"Contact", ""}, {"Lead", "IsConverted = false"}} {
		calls++
		for rec, err := range sf.QueryEmails(ctx, q.t, []string{"Id", "Email"}, addrs, q.and) {
			if err != nil {
				return nil, calls, fmt.Errorf("duplicates: find %ss by email: %w", q.t, err)
			}
			out = append(out, Record{ID: rec.ID, Type: q.t, Email: rec.String("Email")})
		}
	}
	return out, calls, nil
}
