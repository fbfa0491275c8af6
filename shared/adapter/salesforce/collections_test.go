package salesforce

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

const optOutField = "HasOptedOutOfEmail"

func seed(t testing.TB, e *env, contacts, leads int) (cs, ls []sandbox.Record) {
	t.Helper()
	for _, r := range e.org.Seed(sandbox.SeedSpec{Contacts: contacts, Leads: leads}) {
		switch r.Type {
		case "Contact":
			cs = append(cs, r)
		case "Lead":
			ls = append(ls, r)
		}
	}
	require.Len(t, cs, contacts)
	require.Len(t, ls, leads)
	return cs, ls
}

func TestUpdateOptOutMixedTypesAndIDForms(t *testing.T) {
	e := newEnv(t)
	cs, ls := seed(t, e, 3, 3)
	c := e.client(t)

	// Interleaved types, 15- and 18-char ids, one without Type.
	in := []Update{
		{ID: ls[0].ID[:15], Type: "Lead", Field: optOutField, Value: true},
		{ID: cs[0].ID, Type: "Contact", Field: optOutField, Value: true},
		{ID: ls[1].ID, Field: optOutField, Value: true},
		{ID: cs[1].ID[:15], Field: optOutField, Value: true},
		{ID: ls[2].ID, Type: "Lead", Field: optOutField, Value: true},
		{ID: cs[2].ID, Type: "Contact", Field: optOutField, Value: true},
	}
	res, err := c.UpdateOptOut(ctxT(t), in)
	require.NoError(t, err)
	require.Len(t, res, len(in))
	for i, r := range res {
		assert.True(t, r.Success, "input %d: %+v", i, r.Err)
		want, _ := sfid.Normalize(in[i].ID)
		assert.Equal(t, want, r.ID, "results are in input order, ids 18 chars")
		assert.Equal(t, sfid.ObjectType(want), r.Type)
		stored, ok := e.org.Get(want)
		require.True(t, ok)
		assert.True(t, stored.HasOptedOutOfEmail)
	}

	calls := callsOn(e.org, sandbox.RouteCollectionsUpdate)
	require.Len(t, calls, 1, "six records, one collection call")
	assert.Equal(t, 6, calls[0].Records)
	assert.Equal(t, "FALSE", calls[0].AutoAssign)
	assert.Equal(t, "optout-sync", calls[0].Client)
	assert.False(t, calls[0].AssignmentRules, "no Lead assignment rules on an opt-out")
	assert.Equal(t, http.StatusOK, calls[0].Status)
}

func TestUpdateOptOut201Records(t *testing.T) {
	e := newEnv(t)
	cs, ls := seed(t, e, 150, 51)
	c := e.client(t)
	var in []Update
	for i := range 150 {
		in = append(in, Update{ID: cs[i].ID, Field: optOutField, Value: true})
		if i < 51 {
			in = append(in, Update{ID: ls[i].ID, Field: optOutField, Value: true}) // interleaved
		}
	}
	require.Len(t, in, 201)
	res, err := c.UpdateOptOut(ctxT(t), in)
	require.NoError(t, err)
	for i, r := range res {
		require.True(t, r.Success, "input %d: %v", i, r.Err)
	}
	calls := callsOn(e.org, sandbox.RouteCollectionsUpdate)
	require.Len(t, calls, 2)
	assert.Equal(t, 200, calls[0].Records)
	assert.Equal(t, 1, calls[1].Records)
	assert.Equal(t, int64(2), c.APICalls())
	for _, r := range e.org.Records() {
		assert.True(t, r.HasOptedOutOfEmail, r.ID)
	}
}

func TestSplitBatches(t *testing.T) {
	mk := func(types ...string) []*wrec {
		var out []*wrec
		for _, ty := range types {
			out = append(out, &wrec{typ: ty})
		}
		return out
	}
	// 12 types in a row: at most 10 chunks per request.
	types := []string{"A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L"}
	b := splitBatches(mk(types...))
	require.Len(t, b, 2)
	assert.Len(t, b[0], 10)
	assert.Len(t, b[1], 2)
	// 450 of one type: 200, 200, 50.
	many := make([]string, 450)
	for i := range many {
		many[i] = "Contact"
	}
	b = splitBatches(mk(many...))
	require.Len(t, b, 3)
	assert.Equal(t, []int{200, 200, 50}, []int{len(b[0]), len(b[1]), len(b[2])})
}

func TestUpdateOptOutDuplicates(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 2, 0)
	c := e.client(t)
	in := []Update{
		{ID: cs[0].ID, Field: optOutField, Value: true},
		{ID: cs[0].ID[:15], Field: optOutField, Value: true}, // same record, 15-char form
		{ID: cs[1].ID, Field: optOutField, Value: false},
		{ID: cs[1].ID, Field: optOutField, Value: true}, // the later value wins
	}
	res, err := c.UpdateOptOut(ctxT(t), in)
	require.NoError(t, err)
	for i, r := range res {
		assert.True(t, r.Success, "input %d: %v", i, r.Err)
	}
	assert.False(t, res[0].Duplicate)
	assert.True(t, res[1].Duplicate)
	assert.True(t, res[2].Superseded)
	assert.False(t, res[3].Superseded)
	calls := callsOn(e.org, sandbox.RouteCollectionsUpdate)
	require.Len(t, calls, 1)
	assert.Equal(t, 2, calls[0].Records, "duplicates are merged client-side")
	got, _ := e.org.Get(cs[1].ID)
	assert.True(t, got.HasOptedOutOfEmail)
}

func TestUpdateOptOutPerRecordErrors(t *testing.T) {
	e := newEnv(t)
	cs, ls := seed(t, e, 6, 2)
	c := e.client(t)
	ctx := ctxT(t)

	require.NoError(t, e.org.Delete(cs[1].ID))
	contact, err := e.org.ConvertLead(ls[0].ID)
	require.NoError(t, err)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, RecordID: cs[2].ID, ErrorCode: "UNABLE_TO_LOCK_ROW"})
	// A well-formed id of a Contact that does not exist.
	missing := cs[5].ID[:3] + "RO0ZZZZZZZZZ"
	missing, err = sfid.Normalize(missing)
	require.NoError(t, err)
	// An Account id sent as a Contact: wrong type for the id.
	accountID, err := sfid.Normalize("001D000000IRFma")
	require.NoError(t, err)

	in := []Update{
		{ID: cs[0].ID, Field: optOutField, Value: true},                   // 0 ok
		{ID: cs[1].ID, Field: optOutField, Value: true},                   // 1 deleted
		{ID: cs[2].ID, Field: optOutField, Value: true},                   // 2 locked
		{ID: ls[0].ID, Field: optOutField, Value: true},                   // 3 converted lead
		{ID: missing, Field: optOutField, Value: true},                    // 4 not found
		{ID: accountID, Type: "Contact", Field: optOutField, Value: true}, // 5 malformed (server)
		{ID: "003RO0000035WQgAAA", Field: optOutField, Value: true},       // 6 bad checksum (client)
		{ID: cs[3].ID, Field: "No_Such_Field__c", Value: true},            // 7 invalid field
		{ID: ls[1].ID, Field: optOutField, Value: true},                   // 8 ok
	}
	res, err := c.UpdateOptOut(ctx, in)
	require.NoError(t, err, "per-record failures are not a request failure")
	require.Len(t, res, len(in))

	assert.True(t, res[0].Success)
	assert.True(t, res[8].Success)
	want := []struct {
		i     int
		code  string
		class Class
	}{
		{1, "ENTITY_IS_DELETED", PermanentRecord},
		{2, "UNABLE_TO_LOCK_ROW", Retryable},
		{3, "CANNOT_UPDATE_CONVERTED_LEAD", PermanentRecord},
		{4, "NOT_FOUND", PermanentRecord},
		{5, "MALFORMED_ID", PermanentRecord},
		{6, "MALFORMED_ID", PermanentRecord},
		{7, "INVALID_FIELD", PermanentTenant},
	}
	for _, w := range want {
		r := res[w.i]
		assert.False(t, r.Success, "input %d", w.i)
		if assert.NotNil(t, r.Err, "input %d", w.i) {
			assert.Equal(t, w.code, r.Err.Code, "input %d: %v", w.i, r.Err)
			assert.Equal(t, w.class, r.Err.Class, "input %d: %v", w.i, r.Err)
			assert.Equal(t, w.class, ClassOf(r.Err))
		}
	}
	calls := callsOn(e.org, sandbox.RouteCollectionsUpdate)
	require.Len(t, calls, 1)
	assert.Equal(t, 8, calls[0].Records, "the bad-checksum id is never sent")

	// Follow the converted Lead to its Contact and write there.
	recs, err := c.Retrieve(ctx, "Lead", []string{ls[0].ID}, []string{"Id", "IsConverted", "ConvertedContactId"})
	require.NoError(t, err)
	require.NotNil(t, recs[0])
	assert.True(t, recs[0].Bool("IsConverted"))
	assert.Equal(t, contact.ID, recs[0].String("ConvertedContactId"))
	res, err = c.UpdateOptOut(ctx, []Update{{ID: recs[0].String("ConvertedContactId"), Field: optOutField, Value: true}})
	require.NoError(t, err)
	assert.True(t, res[0].Success, "%v", res[0].Err)
	got, _ := e.org.Get(contact.ID)
	assert.True(t, got.HasOptedOutOfEmail)
}

func TestUpdateOptOutCustomFieldReadOnly(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 1, 0)
	e.org.SetCustomField(true, false)
	c := e.client(t)
	res, err := c.UpdateOptOut(ctxT(t), []Update{{ID: cs[0].ID, Field: "Marketo_Sales_Opt_Out__c", Value: true}})
	require.NoError(t, err)
	require.NotNil(t, res[0].Err)
	assert.Equal(t, "INVALID_FIELD_FOR_INSERT_UPDATE", res[0].Err.Code)
	assert.Equal(t, PermanentTenant, res[0].Err.Class)
}

func TestUpdateOptOutRequestFaults(t *testing.T) {
	cases := []struct {
		name       string
		fault      sandbox.Fault
		class      Class
		code       string
		retryAfter time.Duration
	}{
		{"503 json", sandbox.Fault{Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy"}, Retryable, "SERVER_UNAVAILABLE", 0},
		{"503 html", sandbox.Fault{Status: 503, HTML: true}, Retryable, CodeNonJSON, 0},
		{"502 html", sandbox.Fault{Status: 502, HTML: true}, Retryable, CodeNonJSON, 0},
		{"420 html", sandbox.Fault{Status: 420, HTML: true}, Retryable, CodeNonJSON, 0},
		{"500", sandbox.Fault{Status: 500, ErrorCode: "UNKNOWN_EXCEPTION"}, Retryable, "UNKNOWN_EXCEPTION", 0},
		{"retry-after", sandbox.Fault{Status: 503, ErrorCode: "SERVER_UNAVAILABLE", RetryAfter: "7"}, Retryable, "SERVER_UNAVAILABLE", 7 * time.Second},
		{"403 total", sandbox.Fault{Status: 403, ErrorCode: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded."}, Quota, "REQUEST_LIMIT_EXCEEDED", 0},
		{"403 concurrent", sandbox.Fault{Status: 403, ErrorCode: "REQUEST_LIMIT_EXCEEDED", Message: "ConcurrentPerOrgLongTxn Limit exceeded."}, Retryable, "REQUEST_LIMIT_EXCEEDED", 0},
		{"drop before write", sandbox.Fault{DropBeforeWrite: true}, Retryable, CodeTransport, 0},
		{"drop after write", sandbox.Fault{DropAfterWrite: true}, Retryable, CodeTransport, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cs, _ := seed(t, e, 201, 0)
			c := e.client(t)
			var in []Update
			for _, r := range cs {
				in = append(in, Update{ID: r.ID, Field: optOutField, Value: true})
			}
			f := tc.fault
			f.Route = sandbox.RouteCollectionsUpdate
			f.Times = 1
			e.org.InjectFault(f)
			res, err := c.UpdateOptOut(ctxT(t), in)
			se := errOf(t, err)
			assert.Equal(t, tc.class, se.Class, "%v", err)
			assert.Equal(t, tc.code, se.Code, "%v", err)
			assert.Equal(t, tc.retryAfter, se.RetryAfter)
			for i, r := range res {
				require.False(t, r.Success, "input %d", i)
				require.Equal(t, tc.class, ClassOf(r.Err), "input %d: every record carries the request's error", i)
			}
			assert.Equal(t, int64(1), c.APICalls(), "the second request is not sent after the first failed")

			if tc.fault.DropAfterWrite {
				got, _ := e.org.Get(cs[0].ID)
				assert.True(t, got.HasOptedOutOfEmail, "applied although the client saw no answer")
			} else {
				got, _ := e.org.Get(cs[0].ID)
				assert.False(t, got.HasOptedOutOfEmail, "nothing applied")
			}
			// The caller's retry (an idempotent boolean write) succeeds.
			res, err = c.UpdateOptOut(ctxT(t), in)
			require.NoError(t, err)
			for i, r := range res {
				require.True(t, r.Success, "input %d: %v", i, r.Err)
			}
		})
	}
}

func TestUpdateRecordSingle(t *testing.T) {
	e := newEnv(t)
	cs, ls := seed(t, e, 3, 1)
	c := e.client(t)
	ctx := ctxT(t)

	require.NoError(t, c.UpdateRecord(ctx, "Contact", cs[0].ID[:15], map[string]any{optOutField: true}))
	got, _ := e.org.Get(cs[0].ID)
	assert.True(t, got.HasOptedOutOfEmail)
	calls := callsOn(e.org, sandbox.RouteSObjectPatch)
	require.Len(t, calls, 1)
	assert.Equal(t, http.StatusNoContent, calls[0].Status)
	assert.Equal(t, "FALSE", calls[0].AutoAssign)

	require.NoError(t, e.org.Delete(cs[1].ID))
	err := c.UpdateRecord(ctx, "Contact", cs[1].ID, map[string]any{optOutField: true})
	se := errOf(t, err)
	assert.Equal(t, "ENTITY_IS_DELETED", se.Code)
	assert.Equal(t, http.StatusNotFound, se.Status)
	assert.Equal(t, PermanentRecord, se.Class)

	_, err = e.org.ConvertLead(ls[0].ID)
	require.NoError(t, err)
	err = c.UpdateRecord(ctx, "Lead", ls[0].ID, map[string]any{optOutField: true})
	assert.Equal(t, "CANNOT_UPDATE_CONVERTED_LEAD", errOf(t, err).Code)
	assert.Equal(t, PermanentRecord, ClassOf(err))

	err = c.UpdateRecord(ctx, "Contact", cs[2].ID, map[string]any{"No_Such_Field__c": true})
	assert.Equal(t, "INVALID_FIELD", errOf(t, err).Code)
	assert.Equal(t, PermanentTenant, ClassOf(err))

	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteSObjectPatch, RecordID: cs[2].ID, ErrorCode: "UNABLE_TO_LOCK_ROW", Times: 1})
	err = c.UpdateRecord(ctx, "Contact", cs[2].ID, map[string]any{optOutField: true})
	assert.Equal(t, "UNABLE_TO_LOCK_ROW", errOf(t, err).Code)
	assert.Equal(t, Retryable, ClassOf(err))

	missing, _ := sfid.Normalize(cs[2].ID[:3] + "RO0ZZZZZZZZZ")
	err = c.UpdateRecord(ctx, "Contact", missing, map[string]any{optOutField: true})
	assert.Equal(t, "NOT_FOUND", errOf(t, err).Code)
	assert.Equal(t, PermanentRecord, ClassOf(err))
}

func TestRetrieve(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 3, 0)
	require.NoError(t, e.org.Edit(cs[1].ID, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }))
	c := e.client(t)
	missing, _ := sfid.Normalize(cs[0].ID[:3] + "RO0ZZZZZZZZZ")
	ids := []string{cs[0].ID[:15], missing, cs[1].ID, "garbage"}
	recs, err := c.Retrieve(ctxT(t), "Contact", ids, []string{"Id", optOutField})
	require.NoError(t, err)
	require.Len(t, recs, 4)
	require.NotNil(t, recs[0])
	assert.Equal(t, cs[0].ID, recs[0].ID, "18-char id back for a 15-char one")
	assert.Equal(t, "Contact", recs[0].Type)
	assert.False(t, recs[0].Bool(optOutField))
	assert.Nil(t, recs[1], "null slot for a missing record")
	require.NotNil(t, recs[2])
	assert.True(t, recs[2].Bool(optOutField))
	assert.Nil(t, recs[3], "malformed ids are not sent")
	assert.Len(t, callsOn(e.org, sandbox.RouteCollectionsGet), 1)

	_, err = c.Retrieve(ctxT(t), "Contact", ids[:1], []string{"No_Such_Field__c"})
	assert.Equal(t, PermanentTenant, ClassOf(err), "%v", err)
}

func TestCollectionBodyIsValidJSON(t *testing.T) {
	body := collectionBody([]*wrec{
		{id: "003RO0000035WQgYAM", typ: "Contact", fields: []fieldValue{{"HasOptedOutOfEmail", true}, {"Marketo_Sales_Opt_Out__c", false}}},
		{id: "00QRO0000035WQgYAM", typ: "Lead", fields: []fieldValue{{"HasOptedOutOfEmail", true}}},
	})
	var got struct {
		AllOrNone *bool            `json:"allOrNone"`
		Records   []map[string]any `json:"records"`
	}
	require.NoError(t, json.Unmarshal(body, &got), string(body))
	require.NotNil(t, got.AllOrNone)
	assert.False(t, *got.AllOrNone)
	require.Len(t, got.Records, 2)
	assert.Equal(t, map[string]any{"attributes": map[string]any{"type": "Contact"}, "id": "003RO0000035WQgYAM",
		"HasOptedOutOfEmail": true, "Marketo_Sales_Opt_Out__c": false}, got.Records[0])
}
