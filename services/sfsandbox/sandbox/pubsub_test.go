package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/optout-sync/optout-sync/services/sfsandbox/pubsubapi"
)

// psClient is a real Pub/Sub client (the generated code) over loopback,
// sending the metadata Salesforce's Go sample sends.
type psClient struct {
	t   *testing.T
	e   *env
	c   pubsubapi.PubSubClient
	ctx context.Context // carries accesstoken / instanceurl / tenantid
}

func (e *env) pubsub(t *testing.T, org string) *psClient {
	t.Helper()
	return e.pubsubWith(t, org, e.token(org))
}

func (e *env) pubsubWith(t *testing.T, org, token string) *psClient {
	t.Helper()
	conn, err := grpc.NewClient(e.local.PubSubAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial Pub/Sub: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	ctx = metadata.AppendToOutgoingContext(ctx, "accesstoken", token, "instanceurl", e.base(org), "tenantid", e.org(org).OrgID())
	return &psClient{t: t, e: e, c: pubsubapi.NewPubSubClient(conn), ctx: ctx}
}

type subscription struct {
	t *testing.T
	s grpc.BidiStreamingClient[pubsubapi.FetchRequest, pubsubapi.FetchResponse]
}

func (p *psClient) subscribe(first *pubsubapi.FetchRequest) *subscription {
	p.t.Helper()
	s, err := p.c.Subscribe(p.ctx)
	if err != nil {
		p.t.Fatalf("Subscribe: %v", err)
	}
	// io.EOF means the server already ended the stream (a refused token
	// ends it before the request is read); its status comes from Recv.
	if err := s.Send(first); err != nil && !errors.Is(err, io.EOF) {
		p.t.Fatalf("first FetchRequest: %v", err)
	}
	return &subscription{t: p.t, s: s}
}

func (s *subscription) request(n int32) {
	s.t.Helper()
	if err := s.s.Send(&pubsubapi.FetchRequest{NumRequested: n}); err != nil && !errors.Is(err, io.EOF) {
		s.t.Fatalf("FetchRequest: %v", err)
	}
}

func (s *subscription) recv() *pubsubapi.FetchResponse {
	s.t.Helper()
	r, err := s.s.Recv()
	if err != nil {
		s.t.Fatalf("Recv: %v", err)
	}
	return r
}

// events reads responses until n events arrived; keepalives are skipped.
func (s *subscription) events(n int) []*pubsubapi.ConsumerEvent {
	s.t.Helper()
	var out []*pubsubapi.ConsumerEvent
	for len(out) < n {
		out = append(out, s.recv().GetEvents()...)
	}
	if len(out) != n {
		s.t.Fatalf("got %d events, want %d", len(out), n)
	}
	return out
}

// recvErr reads until the stream ends and returns its error.
func (s *subscription) recvErr() error {
	s.t.Helper()
	for {
		if _, err := s.s.Recv(); err != nil {
			return err
		}
	}
}

// decoded is a change event as a subscriber decodes it: the payload read
// with the writer schema GetSchema returns for its schema_id.
type decoded struct {
	header  map[string]any
	fields  map[string]any
	schema  *avro.RecordSchema
	replay  []byte
	payload map[string]any
}

func (p *psClient) decode(ev *pubsubapi.ConsumerEvent) decoded {
	p.t.Helper()
	info, err := p.c.GetSchema(p.ctx, &pubsubapi.SchemaRequest{SchemaId: ev.GetEvent().GetSchemaId()})
	if err != nil {
		p.t.Fatalf("GetSchema: %v", err)
	}
	sc, err := avro.Parse(info.GetSchemaJson())
	if err != nil {
		p.t.Fatalf("parse schema: %v", err)
	}
	var m map[string]any
	if err := avro.Unmarshal(sc, ev.GetEvent().GetPayload(), &m); err != nil {
		p.t.Fatalf("decode payload: %v", err)
	}
	rs := sc.(*avro.RecordSchema)
	return decoded{header: m["ChangeEventHeader"].(map[string]any), fields: m, schema: rs, replay: ev.GetReplayId(), payload: m}
}

// num reads an Avro int or long however the decoder typed it.
func num(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case int64:
		return n
	}
	return -1
}

func (d decoded) str(k string) string { s, _ := d.header[k].(string); return s }

func (d decoded) list(k string) []string {
	var out []string
	for _, v := range d.header[k].([]any) {
		out = append(out, v.(string))
	}
	return out
}

// bitFields decodes a changedFields/nulledFields bitmap as §9.7 says
// subscribers do: element 0 is a big-endian hex number, bit k = field k.
func (d decoded) bitFields(k string) []string {
	bm := d.list(k)
	if len(bm) == 0 {
		return nil
	}
	n, ok := new(big.Int).SetString(strings.TrimPrefix(bm[0], "0x"), 16)
	if !ok {
		panic("bad bitmap " + bm[0])
	}
	var out []string
	for i, f := range d.schema.Fields() {
		if n.Bit(i) == 1 {
			out = append(out, f.Name())
		}
	}
	return out
}

// fromNow subscribes after everything on the bus now: a LATEST subscription
// would race the test's next write (the server may read the first request
// after it).
func fromNow(o *Org, topic string, n int32) *pubsubapi.FetchRequest {
	return &pubsubapi.FetchRequest{TopicName: topic, ReplayPreset: pubsubapi.ReplayPreset_CUSTOM, ReplayId: o.LatestReplayID(), NumRequested: n}
}

func earliest(topic string, n int32) *pubsubapi.FetchRequest {
	return &pubsubapi.FetchRequest{TopicName: topic, ReplayPreset: pubsubapi.ReplayPreset_EARLIEST, NumRequested: n}
}

func trailerCode(t *testing.T, s *subscription) string {
	t.Helper()
	v := s.s.Trailer().Get("error-code")
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func TestPubSubEarliestSeesCollectionsEdit(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	a := o.Put(Record{Type: "Contact", Email: "a@x.test"})
	b := o.Put(Record{Type: "Contact", Email: "b@x.test"})
	tok := e.token("acme")
	r := e.api(tok, "PATCH", "acme", "/composite/sobjects", map[string]any{"records": []collRec{
		upd("Contact", a.ID, optOut()), upd("Contact", b.ID, optOut()),
	}}, "Sforce-Call-Options", "client=optout-sync")
	if r.status != 200 {
		t.Fatalf("collections: %d %s", r.status, r.body)
	}
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(earliest("/data/ContactChangeEvent", 10))
	evs := sub.events(3) // two CREATEs (control API), one merged UPDATE

	create := ps.decode(evs[0])
	if create.str("changeType") != "CREATE" || create.str("changeOrigin") != "" || create.fields["Email"] != "a@x.test" {
		t.Errorf("first event = %v %v, want the control API's CREATE with an empty changeOrigin", create.header, create.fields)
	}
	if len(create.list("changedFields")) != 0 {
		t.Errorf("CREATE changedFields = %v, want empty", create.list("changedFields"))
	}
	up := ps.decode(evs[2])
	if up.schema.Fields()[0].Name() != "ChangeEventHeader" {
		t.Errorf("schema field 0 = %s", up.schema.Fields()[0].Name())
	}
	if up.str("changeType") != "UPDATE" || up.str("entityName") != "Contact" {
		t.Fatalf("header = %v", up.header)
	}
	if got := up.list("recordIds"); !slices.Equal(got, []string{a.ID, b.ID}) {
		t.Errorf("recordIds = %v, want both records in one merged event", got)
	}
	if got, want := up.str("changeOrigin"), "com/salesforce/api/rest/62.0;client=optout-sync"; got != want {
		t.Errorf("changeOrigin = %q, want %q", got, want)
	}
	if got := up.bitFields("changedFields"); !slices.Equal(got, []string{"HasOptedOutOfEmail", "LastModifiedDate"}) {
		t.Errorf("changedFields = %v (%v)", got, up.list("changedFields"))
	}
	if up.fields["HasOptedOutOfEmail"] != true || up.fields["Email"] != nil {
		t.Errorf("payload = %v: changed fields set, unchanged ones null", up.fields)
	}
	if ts, _ := up.header["commitTimestamp"].(int64); ts != e.clock.Now().UnixMilli() {
		t.Errorf("commitTimestamp = %v, want the commit's epoch ms", up.header["commitTimestamp"])
	}
	if up.str("transactionKey") == "" || num(up.header["sequenceNumber"]) != 1 {
		t.Errorf("transactionKey/sequenceNumber = %v", up.header)
	}
	if !(bytes.Compare(evs[0].GetReplayId(), evs[1].GetReplayId()) < 0 && bytes.Compare(evs[1].GetReplayId(), evs[2].GetReplayId()) < 0) {
		t.Errorf("replay ids are not increasing")
	}
}

func TestPubSubChangeOriginAndNulledFields(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact", Email: "c@x.test"})
	l := o.Put(Record{Type: "Lead", Email: "l@x.test"})
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(fromNow(o, "/data/ChangeEvents", 10))
	tok := e.token("acme")
	if r := e.api(tok, "PATCH", "acme", "/sobjects/Contact/"+c.ID, map[string]any{"Email": nil}, "Sforce-Call-Options", "client=sc-sync, defaultNamespace=x"); r.status != 204 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "PATCH", "acme", "/sobjects/Lead/"+l.ID, map[string]any{"HasOptedOutOfEmail": true}); r.status != 204 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	evs := sub.events(2)
	d := ps.decode(evs[0])
	if got := d.str("changeOrigin"); got != "com/salesforce/api/rest/62.0;client=sc-sync" {
		t.Errorf("changeOrigin = %q", got)
	}
	if got := d.bitFields("nulledFields"); !slices.Equal(got, []string{"Email"}) {
		t.Errorf("nulledFields = %v", got)
	}
	if got := d.bitFields("changedFields"); !slices.Equal(got, []string{"Email", "LastModifiedDate"}) {
		t.Errorf("changedFields = %v", got)
	}
	lead := ps.decode(evs[1])
	if lead.str("entityName") != "Lead" || lead.str("changeOrigin") != "com/salesforce/api/rest/62.0" {
		t.Errorf("lead event = %v: no client= without Sforce-Call-Options", lead.header)
	}
}

func TestPubSubFlowControl(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	for range 5 {
		o.Put(Record{Type: "Contact"})
	}
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(earliest("/data/ContactChangeEvent", 2))
	got := sub.events(2)
	all := o.ChangeEvents()
	// The next response after asking for one more carries exactly the third
	// event: nothing beyond the two requested was sent in between.
	sub.request(1)
	r := sub.recv()
	if len(r.GetEvents()) != 1 || !bytes.Equal(r.GetEvents()[0].GetReplayId(), all[2].ReplayID) {
		t.Fatalf("after one more request got %d events, want the third event only", len(r.GetEvents()))
	}
	if r.GetPendingNumRequested() != 0 {
		t.Errorf("pending_num_requested = %d, want 0", r.GetPendingNumRequested())
	}
	if !bytes.Equal(got[1].GetReplayId(), all[1].ReplayID) {
		t.Errorf("second event is not the second of the feed")
	}
	// num_requested is additive and capped at 100 outstanding.
	sub.request(150)
	r = sub.recv()
	if n := len(r.GetEvents()); n != 2 || r.GetPendingNumRequested() != 98 {
		t.Errorf("got %d events, pending %d; want 2 and 98 (100 - 2)", n, r.GetPendingNumRequested())
	}
}

func TestPubSubReplayFromStoredID(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	for range 4 {
		o.Put(Record{Type: "Contact"})
	}
	ps := e.pubsub(t, "acme")
	first := ps.subscribe(earliest("/data/ContactChangeEvent", 2)).events(2)
	stored := first[1].GetReplayId()

	o.Put(Record{Type: "Contact"})
	// Later requests' replay fields are ignored: only the first one counts.
	sub := ps.subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", ReplayPreset: pubsubapi.ReplayPreset_CUSTOM, ReplayId: stored, NumRequested: 1})
	sub.events(1)
	if err := sub.s.Send(&pubsubapi.FetchRequest{ReplayPreset: pubsubapi.ReplayPreset_EARLIEST, NumRequested: 10}); err != nil {
		t.Fatal(err)
	}
	rest := sub.events(2)
	all := o.ChangeEvents()
	for i, ev := range rest {
		if !bytes.Equal(ev.GetReplayId(), all[3+i].ReplayID) {
			t.Errorf("event %d after the stored id is not feed event %d: repeated or skipped", i, 3+i)
		}
	}
}

func TestPubSubKeepaliveCarriesLatestReplayID(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.PubSubKeepalive = 20 * time.Millisecond })
	o := e.org("acme")
	o.Put(Record{Type: "Lead"}) // on the bus, not on the Contact topic
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", NumRequested: 5})
	r := sub.recv()
	if len(r.GetEvents()) != 0 || r.GetPendingNumRequested() != 5 {
		t.Fatalf("keepalive has %d events, pending %d", len(r.GetEvents()), r.GetPendingNumRequested())
	}
	lead := o.ChangeEvents()[0]
	if !bytes.Equal(r.GetLatestReplayId(), lead.ReplayID) {
		t.Errorf("keepalive latest_replay_id is not the bus's latest")
	}
	// The keepalive's id is a valid place to resume from.
	o.Put(Record{Type: "Contact"})
	again := ps.subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", ReplayPreset: pubsubapi.ReplayPreset_CUSTOM, ReplayId: r.GetLatestReplayId(), NumRequested: 1})
	if d := ps.decode(again.events(1)[0]); d.str("changeType") != "CREATE" {
		t.Errorf("resumed event = %v", d.header)
	}
}

func TestPubSubIdleStreamCloses(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.PubSubIdleClose = 20 * time.Millisecond })
	e.org("acme").Put(Record{Type: "Contact"})
	sub := e.pubsub(t, "acme").subscribe(earliest("/data/ContactChangeEvent", 1))
	sub.events(1)
	if err := sub.recvErr(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end = %v, want closed once nothing was asked for", err)
	}
}

func TestPubSubAuth(t *testing.T) {
	e := newEnv(t)
	ps := e.pubsubWith(t, "acme", "00Dbogus!token")
	_, err := ps.c.GetTopic(ps.ctx, &pubsubapi.TopicRequest{TopicName: "/data/ContactChangeEvent"}, grpc.Trailer(new(metadata.MD)))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetTopic with a bad token: %v", err)
	}
	sub := ps.subscribe(earliest("/data/ContactChangeEvent", 1))
	err = sub.recvErr()
	if status.Code(err) != codes.Unauthenticated || trailerCode(t, sub) != ErrCodeAuth {
		t.Fatalf("Subscribe with a bad token: %v, error-code %q", err, trailerCode(t, sub))
	}
	if !strings.Contains(status.Convert(err).Message(), "rpcId: ") || len(sub.s.Trailer().Get("rpc-id")) != 1 {
		t.Errorf("error carries no rpc id: %v", err)
	}
	// An expired session fails alike.
	good := e.pubsub(t, "acme")
	e.org("acme").ExpireTokens()
	var tr metadata.MD
	if _, err := good.c.GetTopic(good.ctx, &pubsubapi.TopicRequest{TopicName: "/data/ContactChangeEvent"}, grpc.Trailer(&tr)); status.Code(err) != codes.Unauthenticated || tr.Get("error-code")[0] != ErrCodeAuth {
		t.Fatalf("GetTopic with an expired token: %v %v", err, tr)
	}
}

func TestPubSubTopicsAndSchema(t *testing.T) {
	e := newEnv(t)
	ps := e.pubsub(t, "acme")
	info, err := ps.c.GetTopic(ps.ctx, &pubsubapi.TopicRequest{TopicName: "/data/LeadChangeEvent"})
	if err != nil || !info.GetCanSubscribe() || info.GetSchemaId() == "" || info.GetTenantGuid() != e.org("acme").OrgID() {
		t.Fatalf("GetTopic = %v, %v", info, err)
	}
	sch, err := ps.c.GetSchema(ps.ctx, &pubsubapi.SchemaRequest{SchemaId: info.GetSchemaId()})
	if err != nil {
		t.Fatal(err)
	}
	sc := avro.MustParse(sch.GetSchemaJson()).(*avro.RecordSchema)
	if sc.FullName() != "com.sforce.eventbus.LeadChangeEvent" || sc.Fields()[0].Name() != "ChangeEventHeader" {
		t.Errorf("schema %s, field 0 %s", sc.FullName(), sc.Fields()[0].Name())
	}
	var tr metadata.MD
	_, err = ps.c.GetTopic(ps.ctx, &pubsubapi.TopicRequest{TopicName: "/data/AccountChangeEvent"}, grpc.Trailer(&tr))
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "topic /data/AccountChangeEvent not found") {
		t.Errorf("unselected entity: %v", err)
	}
	// A topic change on a live stream is refused.
	sub := ps.subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", NumRequested: 1})
	if err := sub.s.Send(&pubsubapi.FetchRequest{TopicName: "/data/LeadChangeEvent", NumRequested: 1}); err != nil {
		t.Fatal(err)
	}
	if err := sub.recvErr(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("topic change: %v", err)
	}
	// Installing a field changes the schema id mid-stream; both stay served.
	e.org("acme").SetCustomField(false, false)
	info2, err := ps.c.GetTopic(ps.ctx, &pubsubapi.TopicRequest{TopicName: "/data/LeadChangeEvent"})
	if err != nil || info2.GetSchemaId() == info.GetSchemaId() {
		t.Fatalf("schema id after a new field = %v (was %s), %v", info2.GetSchemaId(), info.GetSchemaId(), err)
	}
	if _, err := ps.c.GetSchema(ps.ctx, &pubsubapi.SchemaRequest{SchemaId: info.GetSchemaId()}); err != nil {
		t.Errorf("old schema id: %v", err)
	}
}

func TestPubSubLeadConversionSequence(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	l := o.Put(Record{Type: "Lead", Email: "l@x.test"})
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(fromNow(o, "/data/ChangeEvents", 10))
	c, err := o.ConvertLead(l.ID)
	if err != nil {
		t.Fatal(err)
	}
	evs := sub.events(2) // Account is not a selected entity
	ct, ld := ps.decode(evs[0]), ps.decode(evs[1])
	if ct.str("entityName") != "Contact" || ct.str("changeType") != "CREATE" || num(ct.header["sequenceNumber"]) != 2 || ct.list("recordIds")[0] != c.ID {
		t.Errorf("first = %v, want the Contact CREATE, sequence 2 (after the Account)", ct.header)
	}
	if ld.str("entityName") != "Lead" || ld.str("changeType") != "UPDATE" || num(ld.header["sequenceNumber"]) != 3 || ld.str("transactionKey") != ct.str("transactionKey") {
		t.Errorf("second = %v, want the Lead UPDATE, sequence 3, same transaction", ld.header)
	}
	changed := ld.bitFields("changedFields")
	for _, f := range []string{"Status", "IsConverted", "ConvertedDate", "ConvertedAccountId", "ConvertedContactId"} {
		if !slices.Contains(changed, f) {
			t.Errorf("Lead changedFields %v lack %s", changed, f)
		}
	}
	if slices.Contains(changed, "LastModifiedDate") || ld.fields["ConvertedContactId"] != c.ID {
		t.Errorf("Lead conversion event = %v %v", changed, ld.fields)
	}
}

func TestPubSubBulkIngestOrigin(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	r := e.api(tok, "POST", "acme", "/jobs/ingest", map[string]any{"object": "Contact", "operation": "update", "contentType": "CSV", "lineEnding": "LF"})
	var job map[string]any
	r.json(t, &job)
	id, _ := job["id"].(string)
	if r := e.api(tok, "PUT", "acme", "/jobs/ingest/"+id+"/batches", "Id,HasOptedOutOfEmail\n"+c.ID+",true\n"); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "PATCH", "acme", "/jobs/ingest/"+id, map[string]any{"state": "UploadComplete"}); r.status != 200 {
		t.Fatalf("close: %d %s", r.status, r.body)
	}
	for range 10 {
		e.api(tok, "GET", "acme", "/jobs/ingest/"+id, nil)
	}
	evs := o.ChangeEvents()
	last := evs[len(evs)-1]
	if last.ChangeType != "UPDATE" || last.ChangeOrigin != "com/salesforce/api/bulkapi/62.0" || last.Fields["HasOptedOutOfEmail"] != true {
		t.Fatalf("bulk change event = %+v", last)
	}
}

func TestPubSubFaultDrop(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(fromNow(o, "/data/ContactChangeEvent", 1))
	// A delivered event proves the stream is live before the drop.
	o.Put(Record{Type: "Contact"})
	sub.events(1)
	if _, err := o.InjectPubSubFault(PubSubFault{Kind: PubSubDrop}); err != nil {
		t.Fatal(err)
	}
	if err := sub.recvErr(); status.Code(err) != codes.Unavailable {
		t.Fatalf("dropped stream ended with %v", err)
	}
	if _, err := o.InjectPubSubFault(PubSubFault{Kind: PubSubUnavailable, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if err := ps.subscribe(earliest("/data/ContactChangeEvent", 1)).recvErr(); status.Code(err) != codes.Unavailable {
		t.Fatalf("subscribe during maintenance: %v", err)
	}
	if ev := ps.subscribe(earliest("/data/ContactChangeEvent", 1)).events(1); len(ev) != 1 {
		t.Fatal("subscribe after the fault was used up")
	}
}

func TestPubSubFaultStall(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.PubSubKeepalive = 10 * time.Millisecond })
	o := e.org("acme")
	ps := e.pubsub(t, "acme")
	id, _ := o.InjectPubSubFault(PubSubFault{Kind: PubSubStall})
	sub := ps.subscribe(fromNow(o, "/data/ContactChangeEvent", 1))
	o.Put(Record{Type: "Contact"})
	got := make(chan *pubsubapi.FetchResponse, 1)
	go func() {
		r, err := sub.s.Recv()
		if err == nil {
			got <- r
		}
		close(got)
	}()
	// Silent: neither the event nor a keepalive (due every 10 ms) comes.
	select {
	case r := <-got:
		t.Fatalf("a stalled stream sent %v", r)
	case <-time.After(300 * time.Millisecond):
	}
	o.ClearPubSubFault(id)
	r := <-got
	if r == nil || len(r.GetEvents()) != 1 {
		t.Fatalf("after the stall: %v", r)
	}
}

func TestPubSubFaultReplayIDs(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	o.Put(Record{Type: "Contact"})
	o.Put(Record{Type: "Contact"})
	ps := e.pubsub(t, "acme")
	stored := ps.subscribe(earliest("/data/ContactChangeEvent", 1)).events(1)[0].GetReplayId()
	custom := func(id []byte) *subscription {
		return ps.subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", ReplayPreset: pubsubapi.ReplayPreset_CUSTOM, ReplayId: id, NumRequested: 1})
	}
	wantCorrupted := func(name string, s *subscription) {
		t.Helper()
		if err := s.recvErr(); status.Code(err) != codes.InvalidArgument || trailerCode(t, s) != ErrCodeReplayCorrupted {
			t.Errorf("%s: %v, error-code %q", name, err, trailerCode(t, s))
		}
	}
	wantCorrupted("garbage id", custom([]byte("not-a-replay-id")))
	flipped := bytes.Clone(stored)
	flipped[len(flipped)-1] ^= 0xff
	wantCorrupted("corrupted id", custom(flipped))

	// The knob fails a valid id once.
	if _, err := o.InjectPubSubFault(PubSubFault{Kind: PubSubReplayCorrupted, Times: 1}); err != nil {
		t.Fatal(err)
	}
	wantCorrupted("knob", custom(stored))
	custom(stored).events(1)

	// Redelivery after reconnect: the stored id's event comes again.
	_, _ = o.InjectPubSubFault(PubSubFault{Kind: PubSubRedeliver, Times: 1})
	if ev := custom(stored).events(1)[0]; !bytes.Equal(ev.GetReplayId(), stored) {
		t.Errorf("redeliver knob: got another event than the stored one")
	}

	// Past retention (72 h on the sandbox's clock) the id has expired.
	e.clock.Advance(73 * time.Hour)
	wantCorrupted("expired id", custom(stored))
	// The purge knob expires ids without moving the clock.
	o.Put(Record{Type: "Contact"})
	fresh := o.ChangeEvents()[0].ReplayID
	o.Put(Record{Type: "Contact"})
	o.PurgeChangeEvents()
	wantCorrupted("purged id", custom(fresh))
}

func TestPubSubAllocationExceeded(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	for range 3 {
		o.Put(Record{Type: "Contact"})
	}
	o.SetEventAllocation(2, 0)
	sub := e.pubsub(t, "acme").subscribe(earliest("/data/ContactChangeEvent", 10))
	sub.events(2)
	if err := sub.recvErr(); status.Code(err) != codes.ResourceExhausted || trailerCode(t, sub) != ErrCodeLimitExceeded ||
		!strings.Contains(err.Error(), "You have exceeded the event delivery limit for your org.") {
		t.Fatalf("past the allocation: %v, error-code %q", err, trailerCode(t, sub))
	}
	if used, max := o.DeliveredEvents(); used != 2 || max != 2 {
		t.Errorf("delivered %d of %d", used, max)
	}
	// Rolling 24 h: a day later the allocation is back.
	e.clock.Advance(24*time.Hour + time.Minute)
	if used, _ := o.DeliveredEvents(); used != 0 {
		t.Errorf("delivered after 24 h = %d", used)
	}
}

func TestPubSubGapAndOverflow(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(fromNow(o, "/data/ContactChangeEvent", 3))
	if err := o.PublishGap("Contact", ChangeGapUpdate, []string{c.ID, "003*"}); err != nil {
		t.Fatal(err)
	}
	if err := o.PublishOverflow("Contact"); err != nil {
		t.Fatal(err)
	}
	evs := sub.events(2)
	gap, over := ps.decode(evs[0]), ps.decode(evs[1])
	if gap.str("changeType") != "GAP_UPDATE" || !slices.Equal(gap.list("recordIds"), []string{c.ID, "003*"}) || gap.fields["HasOptedOutOfEmail"] != nil {
		t.Errorf("gap = %v %v", gap.header, gap.fields)
	}
	if over.str("changeType") != "GAP_OVERFLOW" || over.str("entityName") != "Contact" || len(over.list("recordIds")) != 0 {
		t.Errorf("overflow = %v", over.header)
	}
}

func TestPubSubCustomChannelFilter(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	err := o.SetChannel(Channel{Name: "OptOutSync__chn", Members: []ChannelMember{{
		SelectedEntity:   "ContactChangeEvent",
		FilterExpression: "(HasOptedOutOfEmail = true) OR (ChangeEventHeader.changeType = 'CREATE')",
		EnrichedFields:   []string{"Email"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.SetChannel(Channel{Name: "Bad__chn", Members: []ChannelMember{{SelectedEntity: "ContactChangeEvent", FilterExpression: "ChangeEventHeader.recordIds = 'x'"}}}); err == nil {
		t.Error("a filter on an array header field was accepted")
	}
	a := o.Put(Record{Type: "Contact", Email: "a@x.test"})
	b := o.Put(Record{Type: "Contact", Email: "b@x.test"})
	_ = o.Edit(a.ID, func(r *Record) { r.Email = "a2@x.test" })       // filtered out
	_ = o.Edit(b.ID, func(r *Record) { r.HasOptedOutOfEmail = true }) // delivered, Email enriched
	ps := e.pubsub(t, "acme")
	evs := ps.subscribe(earliest("/data/OptOutSync__chn", 10)).events(3)
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ps.decode(ev).str("changeType"))
	}
	if !slices.Equal(kinds, []string{"CREATE", "CREATE", "UPDATE"}) {
		t.Fatalf("channel delivered %v", kinds)
	}
	up := ps.decode(evs[2])
	if up.list("recordIds")[0] != b.ID || up.fields["Email"] != "b@x.test" {
		t.Errorf("filtered update = %v %v, want b's opt-out with Email enriched", up.header, up.fields)
	}
	if got := up.bitFields("changedFields"); slices.Contains(got, "Email") {
		t.Errorf("an enriched field is not a changed field: %v", got)
	}
}

func TestPubSubControlAPI(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	ctl := func(method, path string, body string) resp {
		t.Helper()
		return e.raw(method, "/_sandbox/orgs/acme/pubsub/"+path, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
	}
	if r := ctl("POST", "events", `{"changeType":"GAP_UPDATE","entityName":"Contact","recordIds":["`+c.ID+`"]}`); r.status != 204 {
		t.Fatalf("gap: %d %s", r.status, r.body)
	}
	if r := ctl("POST", "events", `{"changeType":"GAP_OVERFLOW","entityName":"Lead"}`); r.status != 204 {
		t.Fatalf("overflow: %d %s", r.status, r.body)
	}
	var evs []ChangeEvent
	ctl("GET", "events", "").json(t, &evs)
	if len(evs) != 3 || evs[1].ChangeType != "GAP_UPDATE" || evs[2].ChangeType != "GAP_OVERFLOW" || evs[2].Entity != "Lead" {
		t.Fatalf("events = %+v", evs)
	}
	if r := ctl("POST", "faults", `{"kind":"nonsense"}`); r.status != 400 {
		t.Errorf("unknown fault kind: %d", r.status)
	}
	var id map[string]string
	ctl("POST", "faults", `{"kind":"stall"}`).json(t, &id)
	if fs := o.PubSubFaults(); len(fs) != 1 || fs[0].ID != id["id"] {
		t.Errorf("faults = %+v", fs)
	}
	if r := ctl("DELETE", "faults/"+id["id"], ""); r.status != 204 || len(o.PubSubFaults()) != 0 {
		t.Errorf("clear fault: %d", r.status)
	}
	if r := ctl("PUT", "allocation", `{"max":10,"used":10}`); r.status != 200 {
		t.Fatalf("allocation: %d %s", r.status, r.body)
	}
	var lim map[string]limitPair
	e.api(e.token("acme"), "GET", "acme", "/limits", nil).json(t, &lim)
	if got := lim["DailyDeliveredPlatformEvents"]; got.Max != 10 || got.Remaining != 0 {
		t.Errorf("/limits DailyDeliveredPlatformEvents = %+v", got)
	}
	if r := ctl("PUT", "channels/OptOutSync__chn", `{"members":[{"selectedEntity":"LeadChangeEvent","filterExpression":"HasOptedOutOfEmail = true"}]}`); r.status != 204 {
		t.Fatalf("channel: %d %s", r.status, r.body)
	}
	if r := ctl("PUT", "channels/Nope", `{"members":[{"selectedEntity":"LeadChangeEvent"}]}`); r.status != 400 {
		t.Errorf("channel without __chn: %d", r.status)
	}
	if chs := o.Channels(); len(chs) != 1 || chs[0].Name != "OptOutSync__chn" {
		t.Errorf("channels = %+v", chs)
	}
	if r := ctl("POST", "purge", ""); r.status != 204 || len(o.ChangeEvents()) != 0 {
		t.Errorf("purge: %d, %d events left", r.status, len(o.ChangeEvents()))
	}
}

func TestPubSubMemoryBound(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.MaxCDCEvents = 3 })
	o := e.org("acme")
	o.Put(Record{Type: "Contact"})
	stored := o.ChangeEvents()[0].ReplayID
	for range 7 {
		o.Put(Record{Type: "Contact"})
	}
	if n := len(o.ChangeEvents()); n > 6 {
		t.Errorf("%d events retained, want at most twice the cap", n)
	}
	sub := e.pubsub(t, "acme").subscribe(&pubsubapi.FetchRequest{TopicName: "/data/ContactChangeEvent", ReplayPreset: pubsubapi.ReplayPreset_CUSTOM, ReplayId: stored, NumRequested: 1})
	if err := sub.recvErr(); trailerCode(t, sub) != ErrCodeReplayCorrupted {
		t.Errorf("replay from a trimmed event: %v", err)
	}
}

func TestPubSubMergeAndSchemaChangeMidStream(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	w := o.Put(Record{Type: "Contact", Email: "w@x.test"})
	l1 := o.Put(Record{Type: "Contact", Email: "w@x.test"})
	l2 := o.Put(Record{Type: "Contact", Email: "w@x.test"})
	ps := e.pubsub(t, "acme")
	sub := ps.subscribe(fromNow(o, "/data/ContactChangeEvent", 10))
	r := e.raw("POST", "/_sandbox/orgs/acme/records/"+w.ID+"/merge", strings.NewReader(`{"losers":["`+l1.ID+`","`+l2.ID+`"]}`), nil)
	if r.status != 200 {
		t.Fatalf("merge: %d %s", r.status, r.body)
	}
	evs := sub.events(2)
	del, up := ps.decode(evs[0]), ps.decode(evs[1])
	if del.str("changeType") != "DELETE" || !slices.Equal(del.list("recordIds"), []string{l1.ID, l2.ID}) {
		t.Errorf("merge DELETE = %v", del.header)
	}
	if up.str("changeType") != "UPDATE" || up.list("recordIds")[0] != w.ID || up.str("transactionKey") != del.str("transactionKey") {
		t.Errorf("merge UPDATE = %v", up.header)
	}
	// A new field gives events a new schema_id mid-stream; the subscriber
	// fetches it and finds the field.
	o.SetCustomField(false, false)
	_ = o.Edit(w.ID, func(r *Record) { r.HasOptedOutOfEmail = true })
	o.SetCustomField(true, true)
	_ = o.Edit(w.ID, func(r *Record) { r.CustomOptOut = true })
	two := sub.events(2)
	if two[0].GetEvent().GetSchemaId() == two[1].GetEvent().GetSchemaId() {
		t.Fatal("schema_id did not change when the field was installed")
	}
	if d := ps.decode(two[1]); d.fields[DefaultCustomField] != true || !slices.Contains(d.bitFields("changedFields"), DefaultCustomField) {
		t.Errorf("event after install = %v %v", d.fields, d.bitFields("changedFields"))
	}
}
