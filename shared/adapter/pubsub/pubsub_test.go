package pubsub

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// subscribe starts a subscription closed at the end of the test.
func subscribe(t *testing.T, c *Client, opts SubscribeOptions) *Subscription {
	t.Helper()
	s, err := c.Subscribe(ctxT(t), opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// events reads batches until n events arrived (keepalives skipped).
func events(t *testing.T, s *Subscription, n int) []Event {
	t.Helper()
	var out []Event
	for len(out) < n {
		b, err := s.Next()
		require.NoError(t, err)
		for _, ev := range b.Events {
			require.NoError(t, ev.Err)
		}
		out = append(out, b.Events...)
	}
	require.Len(t, out, n)
	return out
}

// fromNow subscribes after everything on the bus now.
func fromNow(sb *sandbox, topic string) SubscribeOptions {
	if id := sb.latestReplayID(); id != nil {
		return SubscribeOptions{Topic: topic, Replay: Custom, ReplayID: id}
	}
	return SubscribeOptions{Topic: topic, Replay: Earliest}
}

func classOf(t *testing.T, err error) (salesforce.Class, string) {
	t.Helper()
	require.Error(t, err)
	var e *salesforce.Error
	require.ErrorAs(t, err, &e)
	return salesforce.ClassOf(err), e.Code
}

// Our own opt-out push through sObject Collections arrives as one merged
// UPDATE, decoded: the opt-out field and LastModifiedDate changed, the
// writer's Sforce-Call-Options client in changeOrigin, unchanged fields
// absent. A UI edit has no client.
func TestCollectionsEditArrivesDecoded(t *testing.T) {
	sb := startSandbox(t, "")
	c, sf := sb.client(t)
	a, b := sb.put("Contact", "a@x.test"), sb.put("Contact", "b@x.test")
	sub := subscribe(t, c, fromNow(sb, "/data/ContactChangeEvent"))

	res, err := sf.UpdateOptOut(ctxT(t), []salesforce.Update{
		{ID: a, Type: "Contact", Field: FieldEmailOptOut, Value: true},
		{ID: b, Type: "Contact", Field: FieldEmailOptOut, Value: true},
	})
	require.NoError(t, err)
	require.True(t, res[0].Success && res[1].Success)
	sb.ctl("PATCH", "/records/"+a, map[string]any{"Email": "a2@x.test"}, nil)

	evs := events(t, sub, 2)
	up := evs[0]
	assert.Equal(t, "Contact", up.Header.EntityName)
	assert.Equal(t, ChangeUpdate, up.Header.ChangeType)
	assert.Equal(t, []string{a, b}, up.Header.RecordIDs, "one event for both records")
	assert.Equal(t, []string{FieldEmailOptOut, "LastModifiedDate"}, up.Header.ChangedFields)
	assert.Empty(t, up.Header.NulledFields)
	assert.Equal(t, ourClient, up.Header.Client())
	assert.True(t, up.Header.FromClient(ourClient), "our own write: %q", up.Header.ChangeOrigin)
	assert.Contains(t, up.Header.ChangeOrigin, "com/salesforce/api/rest/")
	v, ok := up.Bool(FieldEmailOptOut)
	assert.True(t, ok && v)
	_, ok = up.String(FieldEmail)
	assert.False(t, ok, "an unchanged field is absent")
	assert.NotEmpty(t, up.Header.TransactionKey)
	assert.Equal(t, int64(1), up.Header.SequenceNumber)
	assert.WithinDuration(t, time.Now(), up.Header.CommitTimestamp, time.Hour)
	assert.NotEmpty(t, up.ReplayID)

	ui := evs[1]
	assert.Equal(t, []string{FieldEmail, "LastModifiedDate"}, ui.Header.ChangedFields)
	assert.Empty(t, ui.Header.ChangeOrigin)
	assert.False(t, ui.Header.FromClient(ourClient), "a UI edit is not ours")
	email, _ := ui.String(FieldEmail)
	assert.Equal(t, "a2@x.test", email)

	// The topic names the schema the events were written with; it is fetched once.
	topic, err := c.GetTopic(ctxT(t), "/data/ContactChangeEvent")
	require.NoError(t, err)
	assert.True(t, topic.CanSubscribe)
	assert.Equal(t, up.SchemaID, topic.SchemaID)
	s1, err := c.GetSchema(ctxT(t), topic.SchemaID)
	require.NoError(t, err)
	s2, err := c.GetSchema(ctxT(t), topic.SchemaID)
	require.NoError(t, err)
	assert.Same(t, s1, s2, "schemas are cached by id")
	assert.Equal(t, "ChangeEventHeader", s1.Fields()[0])
}

// Lead conversion: the Lead's UPDATE carries IsConverted and
// ConvertedContactId, after the new Contact's CREATE, in one transaction.
func TestLeadConversionFields(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	lead := sb.put("Lead", "l@x.test")
	sub := subscribe(t, c, fromNow(sb, "/data/ChangeEvents"))
	var contact struct{ Id string }
	sb.ctl("POST", "/records/"+lead+"/convert", nil, &contact)

	evs := events(t, sub, 2)
	ct, ld := evs[0], evs[1]
	assert.Equal(t, "Contact", ct.Header.EntityName)
	assert.Equal(t, ChangeCreate, ct.Header.ChangeType)
	assert.Empty(t, ct.Header.ChangedFields, "CREATE lists no changed fields")
	assert.Equal(t, "Lead", ld.Header.EntityName)
	assert.Equal(t, []string{lead}, ld.Header.RecordIDs)
	assert.Equal(t, ct.Header.TransactionKey, ld.Header.TransactionKey)
	assert.Less(t, ct.Header.SequenceNumber, ld.Header.SequenceNumber)
	conv, ok := ld.Bool(FieldIsConverted)
	assert.True(t, ok && conv)
	id, _ := ld.String(FieldConvertedContactID)
	assert.Equal(t, contact.Id, id)
	assert.True(t, ld.Changed(FieldIsConverted) && ld.Changed(FieldConvertedContactID))
	assert.False(t, ld.Changed("LastModifiedDate"))
}

// The tenant's sales opt-out field is read when the subscription asks for it.
func TestCustomFieldWatched(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	id := sb.put("Contact", "c@x.test")
	opts := fromNow(sb, "/data/ContactChangeEvent")
	opts.Fields = append(slices.Clone(DefaultFields), "Marketo_Sales_Opt_Out__c")
	sub := subscribe(t, c, opts)
	sb.ctl("PATCH", "/records/"+id, map[string]any{"CustomOptOut": true}, nil)
	ev := events(t, sub, 1)[0]
	v, ok := ev.Bool("Marketo_Sales_Opt_Out__c")
	assert.True(t, ok && v)
	assert.True(t, ev.Changed("Marketo_Sales_Opt_Out__c"))
}

// Flow control: never more events in flight than the batch asked for; more
// are requested as the caller consumes them.
func TestFlowControl(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	const total, batch = 25, 10
	for range total {
		sb.put("Contact", "")
	}
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest, Batch: batch})

	first, err := sub.Next()
	require.NoError(t, err)
	require.Len(t, first.Events, batch, "the first response holds what was requested")
	assert.Equal(t, 0, first.Pending)
	// While the caller holds the batch nothing more was asked for, so
	// nothing more was delivered.
	assert.Equal(t, batch, sb.allocationUsed())

	got := slices.Clone(first.Events)
	for len(got) < total {
		b, err := sub.Next()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b.Events)+b.Pending, batch, "never more than the batch outstanding")
		got = append(got, b.Events...)
		assert.LessOrEqual(t, sb.allocationUsed(), len(got)+batch, "delivered beyond what was consumed and requested")
	}
	require.Len(t, got, total)
	var want []struct{ ReplayID []byte }
	sb.ctl("GET", "/pubsub/events", nil, &want)
	for i, ev := range got {
		assert.True(t, bytes.Equal(want[i].ReplayID, ev.ReplayID), "event %d out of order or repeated", i)
	}
}

// A subscription resumed from a stored replay id repeats nothing and misses
// nothing; once everything was delivered the stream has only keepalives.
func TestResumeFromStoredReplayID(t *testing.T) {
	sb := startSandbox(t, "      pubSubKeepalive: 200ms\n")
	c, _ := sb.client(t)
	for range 5 {
		sb.put("Contact", "")
	}
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest, Batch: 3})
	b, err := sub.Next()
	require.NoError(t, err)
	require.Len(t, b.Events, 3)
	stored := b.LatestReplayID
	assert.Equal(t, b.Events[2].ReplayID, stored)
	sub.Close()

	sb.put("Contact", "")
	sb.put("Contact", "")
	again := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom, ReplayID: stored, Batch: 3})
	rest := events(t, again, 4)
	k, err := again.Next()
	require.NoError(t, err)
	assert.True(t, k.Keepalive, "nothing after the last event: %d more", len(k.Events))

	var all []struct{ ReplayID []byte }
	sb.ctl("GET", "/pubsub/events", nil, &all)
	require.Len(t, all, 7)
	seen := append(slices.Clone(b.Events), rest...)
	for i := range all {
		assert.True(t, bytes.Equal(all[i].ReplayID, seen[i].ReplayID), "event %d missed or repeated", i)
	}
}

// A keepalive surfaces the bus's latest replay id, a valid place to resume.
func TestKeepaliveLatestReplayID(t *testing.T) {
	sb := startSandbox(t, "      pubSubKeepalive: 100ms\n")
	c, _ := sb.client(t)
	sb.put("Lead", "") // on the bus, not on the Contact topic
	latest := sb.latestReplayID()
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent"})
	k, err := sub.Next()
	require.NoError(t, err)
	assert.True(t, k.Keepalive)
	assert.Empty(t, k.Events)
	assert.Equal(t, latest, k.LatestReplayID)
	assert.Equal(t, MaxBatch, k.Pending)

	id := sb.put("Contact", "")
	resumed := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom, ReplayID: k.LatestReplayID, Batch: 1})
	ev := events(t, resumed, 1)[0]
	assert.Equal(t, []string{id}, ev.Header.RecordIDs)
}

// A stream the server closed because nothing was asked for (spec §9.3) is
// reopened where the caller stopped.
func TestIdleClosedStreamResumes(t *testing.T) {
	sb := startSandbox(t, "      pubSubIdleClose: 50ms\n")
	c, _ := sb.client(t)
	a, b := sb.put("Contact", ""), sb.put("Contact", "")
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest, Batch: 1})
	first := events(t, sub, 1)[0]
	assert.Equal(t, []string{a}, first.Header.RecordIDs)
	time.Sleep(300 * time.Millisecond) // the caller is slow: the server closes the idle stream
	second := events(t, sub, 1)[0]
	assert.Equal(t, []string{b}, second.Header.RecordIDs, "next event, not a repeat")
}

// An expired session is refreshed once, and the call goes through.
func TestExpiredTokenRefreshedOnce(t *testing.T) {
	sb := startSandbox(t, "")
	c, sf := sb.client(t)
	_, err := c.GetTopic(ctxT(t), "/data/ContactChangeEvent")
	require.NoError(t, err)
	require.Equal(t, int64(1), sf.TokenFetches())

	sb.ctl("POST", "/tokens/expire", nil, nil)
	_, err = c.GetTopic(ctxT(t), "/data/ContactChangeEvent")
	require.NoError(t, err)
	assert.Equal(t, int64(2), sf.TokenFetches(), "one refresh for a unary call")

	sb.ctl("POST", "/tokens/expire", nil, nil)
	id := sb.put("Contact", "")
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest, Batch: 5})
	ev := events(t, sub, 1)[0]
	assert.Equal(t, []string{id}, ev.Header.RecordIDs)
	assert.Equal(t, int64(3), sf.TokenFetches(), "one refresh for the stream")
}

// Credentials that a refresh cannot fix end as Auth/PermanentTenant, not a loop.
func TestRefusedCredentialsClassified(t *testing.T) {
	sb := startSandbox(t, "")
	sf, err := salesforce.New(context.Background(), salesforce.Config{TokenURL: sb.orgURL, ClientID: testClientID, ClientSecret: "wrong"})
	require.NoError(t, err)
	c, err := New(sf, Config{Addr: sb.pubsubAddr, Plaintext: true})
	require.NoError(t, err)
	defer c.Close()
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent"})
	_, err = sub.Next()
	class, _ := classOf(t, err)
	assert.Equal(t, salesforce.PermanentTenant, class, "%v", err)
	assert.Equal(t, int64(1), sf.TokenFetches())
}

// A refused replay id (expired past retention, corrupted) is its own class
// and code, never a silent jump elsewhere.
func TestRefusedReplayID(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	sb.put("Contact", "")
	stored := sb.latestReplayID()
	sb.put("Contact", "")

	for name, id := range map[string][]byte{"garbage": []byte("not-a-replay-id")} {
		_, err := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom, ReplayID: id}).Next()
		class, code := classOf(t, err)
		assert.Equal(t, salesforce.ReplayLost, class, name)
		assert.Equal(t, salesforce.CodeReplayIDCorrupted, code, name)
	}

	sb.ctl("POST", "/pubsub/faults", map[string]any{"kind": "replayCorrupted", "times": 1}, nil)
	_, err := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom, ReplayID: stored}).Next()
	class, code := classOf(t, err)
	assert.Equal(t, salesforce.ReplayLost, class)
	assert.Equal(t, salesforce.CodeReplayIDCorrupted, code)

	sb.ctl("POST", "/pubsub/purge", nil, nil) // every retained event expires
	_, err = subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom, ReplayID: stored}).Next()
	class, code = classOf(t, err)
	assert.Equal(t, salesforce.ReplayLost, class, "expired: %v", err)
	assert.Equal(t, salesforce.CodeReplayIDCorrupted, code)
}

// The other §9.4 failures, each classified once: allocation spent (Quota),
// an unselected entity (PermanentTenant), maintenance (Retryable, and the
// next call resumes).
func TestStreamErrorsClassified(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	id := sb.put("Contact", "")

	_, err := c.GetTopic(ctxT(t), "/data/AccountChangeEvent")
	class, _ := classOf(t, err)
	assert.Equal(t, salesforce.PermanentTenant, class, "%v", err)

	sb.ctl("POST", "/pubsub/faults", map[string]any{"kind": "unavailable", "times": 1}, nil)
	sub := subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest})
	_, err = sub.Next()
	class, _ = classOf(t, err)
	assert.Equal(t, salesforce.Retryable, class, "%v", err)
	ev := events(t, sub, 1)[0] // calling Next again resubscribes
	assert.Equal(t, []string{id}, ev.Header.RecordIDs)

	sb.ctl("PUT", "/pubsub/allocation", map[string]any{"max": 5, "used": 5}, nil)
	_, err = subscribe(t, c, SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Earliest}).Next()
	class, code := classOf(t, err)
	assert.Equal(t, salesforce.Quota, class, "%v", err)
	assert.Equal(t, salesforce.CodeEventLimitExceeded, code)
}

// Credentials go only over TLS to hosts they belong to: a plaintext address
// that is not loopback (or listed for development) is refused before any
// token is fetched, as is a TLS address on a foreign host.
func TestEndpointPolicyBeforeAnyToken(t *testing.T) {
	sf, err := salesforce.New(context.Background(), salesforce.Config{TokenURL: "http://127.0.0.1:1", ClientID: "id", ClientSecret: "s"})
	require.NoError(t, err)
	for _, cfg := range []Config{
		{Addr: "api.pubsub.salesforce.com:7443", Plaintext: true},
		{Addr: "10.0.0.8:7443", Plaintext: true},
		{Addr: "pubsub.attacker.invalid:443"},
		{Addr: "no-port"},
	} {
		_, err := New(sf, cfg)
		class, code := classOf(t, err)
		assert.Equal(t, salesforce.PermanentTenant, class, "%+v", cfg)
		assert.Equal(t, salesforce.CodeUnsafeEndpoint, code, "%+v", cfg)
	}
	assert.Equal(t, int64(0), sf.TokenFetches(), "no token was fetched")

	for _, cfg := range []Config{{}, {Addr: "api.deu.pubsub.salesforce.com:443"}, {Addr: "127.0.0.1:7443", Plaintext: true}} {
		c, err := New(sf, cfg)
		require.NoError(t, err, "%+v", cfg)
		_ = c.Close()
	}

	// A development cluster's sandbox, when the operator lists it.
	dev, err := salesforce.New(context.Background(), salesforce.Config{TokenURL: "http://sfsandbox:8086", ClientID: "id", ClientSecret: "s",
		Endpoints: salesforce.EndpointPolicy{InsecureHTTPHosts: []string{"sfsandbox"}}})
	require.NoError(t, err)
	c, err := New(dev, Config{Addr: "sfsandbox:7443", Plaintext: true})
	require.NoError(t, err)
	_ = c.Close()
	_, err = New(dev, Config{Addr: "other:7443", Plaintext: true})
	require.Error(t, err)
}

func TestSubscribeOptionsChecked(t *testing.T) {
	sf, err := salesforce.New(context.Background(), salesforce.Config{TokenURL: "http://127.0.0.1:1", ClientID: "id", ClientSecret: "s"})
	require.NoError(t, err)
	c, err := New(sf, Config{Addr: "127.0.0.1:1", Plaintext: true})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Subscribe(context.Background(), SubscribeOptions{})
	assert.True(t, errors.As(err, new(*salesforce.Error)))
	_, err = c.Subscribe(context.Background(), SubscribeOptions{Topic: "/data/ContactChangeEvent", Replay: Custom})
	assert.Error(t, err, "Custom without a replay id")
}

// A stream gone silent (no event, no keepalive, no error) is ended by the
// watchdog with a recognisable error; the next call resumes, missing nothing.
func TestWatchdogEndsSilentStream(t *testing.T) {
	sb := startSandbox(t, "")
	c, _ := sb.client(t)
	var fault struct{ ID string }
	sb.ctl("POST", "/pubsub/faults", map[string]any{"kind": "stall"}, &fault)
	opts := fromNow(sb, "/data/ContactChangeEvent")
	opts.Watchdog = 300 * time.Millisecond
	sub := subscribe(t, c, opts)
	id := sb.put("Contact", "")
	_, err := sub.Next()
	class, code := classOf(t, err)
	assert.Equal(t, salesforce.Retryable, class)
	assert.Equal(t, CodeStalled, code)

	sb.ctl("DELETE", "/pubsub/faults/"+fault.ID, nil, nil)
	ev := events(t, sub, 1)[0]
	assert.Equal(t, []string{id}, ev.Header.RecordIDs)
}
