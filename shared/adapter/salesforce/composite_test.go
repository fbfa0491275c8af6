package salesforce

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

const salesField = "Marketo_Sales_Opt_Out__c"

// The read and the write of a 200-record batch of Contacts and Leads cost
// one API call, and the values read are those from before the write.
func TestReadAndUpdateReadsBeforeWritingInOneCall(t *testing.T) {
	e := newEnv(t)
	cs, ls := seed(t, e, 120, 80)
	for _, r := range []sandbox.Record{cs[3], ls[5]} {
		r.CustomOptOut = true
		e.org.Put(r)
	}
	c := e.client(t)
	var in []ReadUpdate
	for i := range 120 {
		in = append(in, ReadUpdate{Update: Update{ID: cs[i].ID, Field: salesField, Value: true}, Read: true})
		if i < 80 {
			in = append(in, ReadUpdate{Update: Update{ID: ls[i].ID, Field: salesField, Value: true}, Read: i != 7})
		}
	}
	usage := e.org.APICalls()
	res, err := c.ReadAndUpdate(ctxT(t), in)
	require.NoError(t, err)
	assert.Equal(t, 1, e.org.APICalls()-usage, "one API call for the read and the write of 200 records")
	require.Len(t, res, len(in))
	for i, r := range res {
		require.True(t, r.Success, "input %d: %+v", i, r.Err)
		stored, _ := e.org.Get(r.ID)
		assert.True(t, stored.CustomOptOut, "input %d written", i)
		if !in[i].Read {
			assert.Nil(t, r.Before, "input %d: not read", i)
			continue
		}
		require.NotNil(t, r.Before, "input %d read", i)
		assert.Equal(t, r.ID == cs[3].ID || r.ID == ls[5].ID, *r.Before, "input %d: the value before the write", i)
	}
	calls := callsOn(e.org, sandbox.RouteComposite)
	require.Len(t, calls, 1)
	subs := calls[0].Subrequests
	require.Len(t, subs, 3, "a query per type, then the write")
	assert.Equal(t, []string{sandbox.RouteQuery, sandbox.RouteQuery, sandbox.RouteCollectionsUpdate},
		[]string{subs[0].Route, subs[1].Route, subs[2].Route})
	assert.Equal(t, "FALSE", subs[2].AutoAssign)
	assert.False(t, calls[0].AssignmentRules, "no Lead assignment rules on an opt-out")
}

// A batch above 200 records is split like UpdateOptOut's: one composite
// per 200 records.
func TestReadAndUpdateSplitsAt200Records(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 201, 0)
	c := e.client(t)
	var in []ReadUpdate
	for _, r := range cs {
		in = append(in, ReadUpdate{Update: Update{ID: r.ID, Field: salesField, Value: true}, Read: true})
	}
	res, err := c.ReadAndUpdate(ctxT(t), in)
	require.NoError(t, err)
	for _, r := range res {
		require.True(t, r.Success)
		require.NotNil(t, r.Before)
	}
	assert.Len(t, callsOn(e.org, sandbox.RouteComposite), 2)
}

// The read and the write answer on their own: a failed read leaves the
// value unknown, a record's failure is that record's.
func TestReadAndUpdateFailuresAnswerOnTheirOwn(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 3, 0)
	c := e.client(t)
	_ = e.org.Delete(cs[2].ID)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteQuery, ErrorCode: "QUERY_TIMEOUT", Status: 400, Times: 1})
	in := []ReadUpdate{
		{Update: Update{ID: cs[0].ID, Field: salesField, Value: true}, Read: true},
		{Update: Update{ID: cs[1].ID, Field: salesField, Value: true}, Read: true},
		{Update: Update{ID: cs[2].ID, Field: salesField, Value: true}, Read: true},
	}
	res, err := c.ReadAndUpdate(ctxT(t), in)
	require.NoError(t, err)
	for i, r := range res[:2] {
		assert.True(t, r.Success, "input %d", i)
		assert.Nil(t, r.Before, "input %d: the read failed", i)
		require.NotNil(t, r.ReadErr, "input %d", i)
		assert.Equal(t, "QUERY_TIMEOUT", r.ReadErr.Code)
		assert.Equal(t, Retryable, ClassOf(r.ReadErr))
	}
	assert.False(t, res[2].Success)
	assert.Equal(t, PermanentRecord, ClassOf(res[2].Err), "a deleted record is that record's failure")

	// Deleted: not returned by the read, so its value is unknown.
	res, err = c.ReadAndUpdate(ctxT(t), in[2:])
	require.NoError(t, err)
	assert.Nil(t, res[0].Before)
	assert.Nil(t, res[0].ReadErr)
}

// An answer lost after the write was applied is a retryable call error
// for every record: the write may have landed, its read is gone with it.
func TestReadAndUpdateLostAnswer(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 2, 0)
	c := e.client(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteComposite, DropAfterWrite: true, Times: 1})
	in := []ReadUpdate{
		{Update: Update{ID: cs[0].ID, Field: salesField, Value: true}, Read: true},
		{Update: Update{ID: cs[1].ID, Field: salesField, Value: false}},
	}
	res, err := c.ReadAndUpdate(ctxT(t), in)
	e0 := errOf(t, err)
	assert.Equal(t, CodeTransport, e0.Code)
	assert.Equal(t, Retryable, ClassOf(err))
	for _, r := range res {
		assert.False(t, r.Success)
		assert.Nil(t, r.Before)
	}
	stored, _ := e.org.Get(cs[0].ID)
	assert.True(t, stored.CustomOptOut, "the write landed although its answer never came")
}

// A write subrequest refused as a whole (an unknown field) fails the
// batch like a refused collection request.
func TestReadAndUpdateUnknownField(t *testing.T) {
	e := newEnv(t, func(oc *sandbox.OrgConfig) { oc.CustomFieldInstalled = false })
	cs, _ := seed(t, e, 1, 0)
	c := e.client(t)
	res, err := c.ReadAndUpdate(ctxT(t), []ReadUpdate{{Update: Update{ID: cs[0].ID, Field: salesField, Value: true}, Read: true}})
	require.Len(t, res, 1)
	if err != nil {
		assert.Equal(t, PermanentTenant, ClassOf(err))
		return
	}
	// Salesforce answers an unknown field per record in a collection.
	assert.False(t, res[0].Success)
	assert.Equal(t, "INVALID_FIELD", res[0].Err.Code)
	require.NotNil(t, res[0].ReadErr, "the read of an unknown field fails too")
	assert.Equal(t, PermanentTenant, ClassOf(res[0].ReadErr))
}

func TestSplitCompositeKeepsFourReadTypesPerRequest(t *testing.T) {
	var b []*wrec
	for _, typ := range []string{"A", "B", "C", "D", "E", "F"} {
		b = append(b, &wrec{typ: typ, reads: []string{"X"}}, &wrec{typ: typ})
	}
	b = append(b, &wrec{typ: "G"}) // nothing to read: no query
	out := splitComposite([][]*wrec{b})
	require.Len(t, out, 2)
	assert.Len(t, out[0], 8)
	assert.Len(t, out[1], 5)
}
