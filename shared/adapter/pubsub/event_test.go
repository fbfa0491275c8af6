package pubsub

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testSchema is a change event schema of 32 top-level fields: f0 is the
// header, f4 and f7 compound records of 8 children.
func testSchema(t *testing.T) *Schema {
	t.Helper()
	var fields []string
	for i := range 32 {
		typ := `["null","string"]`
		switch i {
		case 0:
			typ = `{"type":"record","name":"ChangeEventHeader","fields":[{"name":"entityName","type":"string"}]}`
		case 4, 7:
			var kids []string
			for k := range 8 {
				kids = append(kids, fmt.Sprintf(`{"name":"c%d","type":["null","string"],"default":null}`, k))
			}
			typ = fmt.Sprintf(`["null",{"type":"record","name":"R%d","fields":[%s]}]`, i, strings.Join(kids, ","))
		}
		name := fmt.Sprintf("f%d", i)
		if i == 0 {
			name = "ChangeEventHeader"
		}
		def := `,"default":null`
		if i == 0 {
			def = ""
		}
		fields = append(fields, fmt.Sprintf(`{"name":%q,"type":%s%s}`, name, typ, def))
	}
	js := `{"type":"record","name":"TestChangeEvent","namespace":"com.sforce.eventbus","fields":[` + strings.Join(fields, ",") + `]}`
	s, err := parseSchema("id", js)
	require.NoError(t, err)
	return s
}

// The worked example of spec §9.7 (Salesforce's documentation sample).
func TestBitmapDocSample(t *testing.T) {
	s := testSchema(t)
	got, err := s.bitmapFields([]string{"0x650004E0", "4-0x10", "7-0x06"})
	require.NoError(t, err)
	assert.Equal(t, []string{"f5", "f6", "f7", "f10", "f24", "f26", "f29", "f30", "f4.c4", "f7.c1", "f7.c2"}, got)

	got, err = s.bitmapFields(nil)
	require.NoError(t, err)
	assert.Empty(t, got)
	// Bits past the schema's fields have no name: ignored, not an error.
	got, err = s.bitmapFields([]string{"0x0100000002"})
	require.NoError(t, err)
	assert.Equal(t, []string{"f1"}, got)
	for _, bad := range []string{"650004E0", "0xZZ", "x-0x01"} {
		_, err := s.bitmapFields([]string{bad})
		assert.Error(t, err, bad)
	}
}

func TestSchemaMustStartWithHeader(t *testing.T) {
	_, err := parseSchema("id", `{"type":"record","name":"X","fields":[{"name":"a","type":"string"}]}`)
	assert.Error(t, err)
	_, err = parseSchema("id", `not json`)
	assert.Error(t, err)
}

func TestDecodeKeepsWatchedFields(t *testing.T) {
	js := `{"type":"record","name":"ContactChangeEvent","namespace":"com.sforce.eventbus","fields":[
	 {"name":"ChangeEventHeader","type":{"type":"record","name":"ChangeEventHeader","fields":[
	  {"name":"entityName","type":"string"},{"name":"recordIds","type":{"type":"array","items":"string"}},
	  {"name":"changeType","type":{"type":"enum","name":"ChangeType","symbols":["CREATE","UPDATE","SNAPSHOT"]}},
	  {"name":"changeOrigin","type":"string"},{"name":"transactionKey","type":"string"},
	  {"name":"sequenceNumber","type":"int"},{"name":"commitTimestamp","type":"long"},{"name":"commitNumber","type":"long"},
	  {"name":"commitUser","type":"string"},{"name":"nulledFields","type":{"type":"array","items":"string"}},
	  {"name":"diffFields","type":{"type":"array","items":"string"}},{"name":"changedFields","type":{"type":"array","items":"string"}}]}},
	 {"name":"Email","type":["null","string"],"default":null},
	 {"name":"HasOptedOutOfEmail","type":["null","boolean"],"default":null},
	 {"name":"Other","type":["null","string"],"default":null}]}`
	s, err := parseSchema("sid", js)
	require.NoError(t, err)
	payload, err := avro.Marshal(s.avro, map[string]any{
		"ChangeEventHeader": map[string]any{"entityName": "Contact", "recordIds": []any{"003000000000001AAA"}, "changeType": "SNAPSHOT",
			"changeOrigin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/", "transactionKey": "tk", "sequenceNumber": 2,
			"commitTimestamp": int64(1700000000123), "commitNumber": int64(9), "commitUser": "005x",
			"nulledFields": []any{"0x02"}, "diffFields": []any{}, "changedFields": []any{"0x06"}},
		"Email": nil, "HasOptedOutOfEmail": true, "Other": "x",
	})
	require.NoError(t, err)
	h, vals, err := decode(s, payload, DefaultFields)
	require.NoError(t, err)
	assert.Equal(t, "SNAPSHOT", h.ChangeType, "unknown symbols pass through")
	assert.Equal(t, []string{"Email", "HasOptedOutOfEmail"}, h.ChangedFields)
	assert.Equal(t, []string{"Email"}, h.NulledFields)
	assert.Equal(t, int64(1700000000123), h.CommitTimestamp.UnixMilli())
	assert.Equal(t, int64(2), h.SequenceNumber)
	assert.Equal(t, "SfdcInternalAPI", h.Client(), "trailing slash tolerated")
	assert.Equal(t, map[string]any{"HasOptedOutOfEmail": true}, vals, "only watched, non-null fields")

	_, _, err = decode(s, []byte{0xff, 0xff}, DefaultFields)
	assert.Error(t, err)
}

func TestHeaderClient(t *testing.T) {
	for origin, want := range map[string]string{
		"com/salesforce/api/rest/62.0;client=optout-sync":  "optout-sync",
		"com/salesforce/api/rest/62.0;client=optout-sync/": "optout-sync",
		"com/salesforce/api/rest/62.0":                     "",
		"":                                                 "",
		"com/salesforce/api/rest/62.0;client=optout-sync-other": "optout-sync-other",
	} {
		h := Header{ChangeOrigin: origin}
		assert.Equal(t, want, h.Client(), origin)
		assert.Equal(t, want == "optout-sync", h.FromClient("optout-sync"), origin)
	}
	assert.False(t, Header{}.FromClient(""))
}
