package salesforce

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

func TestCheckOptOutField(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)

	require.NoError(t, c.CheckOptOutField(ctx, "HasOptedOutOfEmail"))
	require.NoError(t, c.CheckOptOutField(ctx, "Marketo_Sales_Opt_Out__c"))
	require.NoError(t, c.CheckOptOutField(ctx, "marketo_sales_opt_out__c"), "API names are case-insensitive")
	assert.Len(t, callsOn(e.org, sandbox.RouteDescribe), 6, "one describe per type per check")

	e.org.SetCustomField(true, false)
	err := c.CheckOptOutField(ctx, "Marketo_Sales_Opt_Out__c")
	se := errOf(t, err)
	assert.Equal(t, PermanentTenant, se.Class)
	assert.Equal(t, CodeFieldUnusable, se.Code)
	assert.Equal(t, "field Marketo_Sales_Opt_Out__c: not writable on Contact and Lead", se.Message)

	e.org.SetCustomField(false, false)
	err = c.CheckOptOutField(ctx, "Marketo_Sales_Opt_Out__c")
	assert.Equal(t, "field Marketo_Sales_Opt_Out__c: missing on Contact and Lead", errOf(t, err).Message)
	assert.Equal(t, PermanentTenant, ClassOf(err))

	// A describe that fails keeps its own class.
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteDescribe, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Times: 1})
	err = c.CheckOptOutField(ctx, "HasOptedOutOfEmail")
	assert.Equal(t, Retryable, ClassOf(err), "%v", err)
	assert.True(t, strings.HasPrefix(err.Error(), "check opt-out field HasOptedOutOfEmail: "), err.Error())
}

func TestFieldProblemsMessage(t *testing.T) {
	contact := &SObjectDescribe{Name: "Contact", Fields: []FieldDescribe{{Name: "Marketo_Sales_Opt_Out__c", Type: "boolean", Updateable: false}}}
	lead := &SObjectDescribe{Name: "Lead", Fields: []FieldDescribe{{Name: "Email", Type: "email", Updateable: true}}}
	got := fieldProblems("Marketo_Sales_Opt_Out__c", OptOutTypes, []*SObjectDescribe{contact, lead})
	assert.Equal(t, "missing on Lead; not writable on Contact", strings.Join(got, "; "))

	lead.Fields = append(lead.Fields, FieldDescribe{Name: "Marketo_Sales_Opt_Out__c", Type: "string", Updateable: true})
	got = fieldProblems("Marketo_Sales_Opt_Out__c", OptOutTypes, []*SObjectDescribe{contact, lead})
	assert.Equal(t, "not writable on Contact; not a checkbox on Lead (type string)", strings.Join(got, "; "))
}

func TestDescribeUnknownType(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	_, err := c.Describe(ctxT(t), "NoSuchObject__c")
	se := errOf(t, err)
	assert.Equal(t, "NOT_FOUND", se.Code)
	assert.Equal(t, PermanentTenant, se.Class, "NOT_FOUND on a describe is no record's fault")
	_, err = c.Describe(ctxT(t), "Contact/../x")
	assert.Equal(t, CodeInvalidArgument, errOf(t, err).Code)
}
