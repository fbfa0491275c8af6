package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/optout-sync/optout-sync/services/sfsandbox/pubsubapi"
)

// The Pub/Sub API server (spec §9.1–9.4, "Emulator must" 13, 15, 16): one
// gRPC service for every org, as Salesforce's global endpoint is; the org
// is the one whose tenantid the call names.

// Trailer error codes of §9.4.
const (
	ErrCodeAuth            = "sfdc.platform.eventbus.grpc.service.auth.error"
	ErrCodeReplayCorrupted = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
	ErrCodeLimitExceeded   = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
)

// [inference] Unknown topics and schemas (NOT_FOUND) and a topic change
// (INVALID_ARGUMENT) carry only the rpc-id trailer: the spec quotes their
// status and text but no trailer code (unconfirmed), so none is invented
// for a subscriber to match.

// maxPending caps what a Subscribe call may owe (§9.3).
const maxPending = 100

// RegisterPubSub serves eventbus.v1.PubSub for every org on g.
func (s *Sandbox) RegisterPubSub(g *grpc.Server) {
	pubsubapi.RegisterPubSubServer(g, &pubsubServer{sb: s})
}

type pubsubServer struct {
	pubsubapi.UnimplementedPubSubServer
	sb *Sandbox
}

func newRPCID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// psErr builds a Pub/Sub error: gRPC status whose message ends with the
// rpc id, and the error-code and rpc-id trailers (§9.4).
func psErr(set func(metadata.MD), c codes.Code, errCode, msg, rpcID string) error {
	md := metadata.Pairs("rpc-id", rpcID)
	if errCode != "" {
		md.Set("error-code", errCode)
	}
	set(md)
	return status.Error(c, msg+" rpcId: "+rpcID)
}

func unarySetter(ctx context.Context) func(metadata.MD) {
	return func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) }
}

// codeByName resolves a configured status name; unknown names give def.
func codeByName(name string, def codes.Code) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(strings.ReplaceAll(c.String(), "_", ""), strings.ReplaceAll(name, "_", "")) {
			return c
		}
	}
	return def
}

// authenticate checks the accesstoken / instanceurl / tenantid metadata
// against the org's issued sessions, as the REST side checks the bearer
// token (expired, revoked or idle-timed-out tokens fail). [inference]
// instanceurl must be present but is not compared: behind port forwards the
// client's view of the origin differs from ours, and the org is found by
// tenantid.
func (s *Sandbox) authenticate(ctx context.Context, set func(metadata.MD), rpcID string) (*Org, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	token, instance, tenant := get("accesstoken"), get("instanceurl"), get("tenantid")
	var org *Org
	if id, ok := To18(tenant); ok {
		for _, n := range s.names {
			if s.orgs[n].orgID.String() == id {
				org = s.orgs[n]
			}
		}
	}
	fail := func(o *Org) error {
		st := "UNAUTHENTICATED"
		if o != nil {
			o.mu.Lock()
			st = o.cfg.Behavior.PubSubAuthStatus
			o.mu.Unlock()
		}
		// [inference] The message text is ours; the code is §9.4's.
		return psErr(set, codeByName(st, codes.Unauthenticated), ErrCodeAuth,
			"Authentication exception. Ensure that the accesstoken, instanceurl and tenantid headers are valid.", rpcID)
	}
	if org == nil || token == "" || instance == "" {
		return nil, fail(org)
	}
	now := org.now()
	org.mu.Lock()
	sess, ok := org.sessions[token]
	timeout := org.cfg.Behavior.SessionTimeout
	valid := ok && !sess.revoked && (timeout <= 0 || now.Sub(sess.lastUsed) < timeout)
	if valid {
		sess.lastUsed = now
	}
	org.mu.Unlock()
	if !valid {
		return nil, fail(org)
	}
	return org, nil
}

// topicSel is what a topic delivers: entity name -> its channel member
// (nil member: every event of the entity).
type topicSel struct {
	name    string
	members map[string]*channelMember
}

func topicNotFound(set func(metadata.MD), o *Org, topic, rpcID string) error {
	return psErr(set, codes.NotFound, "", fmt.Sprintf(
		"The topic information for org %s and topic %s not found. Ensure the topic name is correct and that the topic exists.",
		o.orgID.String(), topic), rpcID)
}

// resolveTopic maps a topic name to what it delivers (§9.5): /data/<Entity>ChangeEvent
// for a selected entity, /data/ChangeEvents for all selected ones, /data/<Name>__chn.
func (o *Org) resolveTopic(topic string) (*topicSel, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	rest, ok := strings.CutPrefix(topic, "/data/")
	if !ok {
		return nil, false
	}
	sel := &topicSel{name: topic, members: map[string]*channelMember{}}
	switch {
	case rest == "ChangeEvents":
		for _, e := range o.cfg.Behavior.CDCEntities {
			sel.members[canonicalEntity(e)] = nil
		}
	case strings.HasSuffix(rest, "__chn"):
		ch := o.cdc.channels[rest]
		if ch == nil {
			return nil, false
		}
		for i := range ch.members {
			m := &ch.members[i]
			sel.members[m.entity] = m
		}
	case strings.HasSuffix(rest, "ChangeEvent"):
		ent := strings.TrimSuffix(rest, "ChangeEvent")
		if !slices.ContainsFunc(o.cfg.Behavior.CDCEntities, func(e string) bool { return e == ent }) {
			return nil, false
		}
		sel.members[ent] = nil
	default:
		return nil, false
	}
	return sel, len(sel.members) > 0
}

func (p *pubsubServer) GetTopic(ctx context.Context, req *pubsubapi.TopicRequest) (*pubsubapi.TopicInfo, error) {
	rpcID := newRPCID()
	set := unarySetter(ctx)
	o, err := p.sb.authenticate(ctx, set, rpcID)
	if err != nil {
		return nil, err
	}
	sel, ok := o.resolveTopic(req.GetTopicName())
	if !ok {
		return nil, topicNotFound(set, o, req.GetTopicName(), rpcID)
	}
	info := &pubsubapi.TopicInfo{TopicName: req.GetTopicName(), TenantGuid: o.orgID.String(), CanSubscribe: true, RpcId: rpcID}
	// A topic of one entity has that entity's current schema; [inference] a
	// topic carrying several (ChangeEvents, multi-member channels) names
	// none: each event carries its own schema_id.
	if len(sel.members) == 1 {
		for ent := range sel.members {
			o.mu.Lock()
			info.SchemaId = o.schemaLocked(ent).id
			o.mu.Unlock()
		}
	}
	return info, nil
}

func (p *pubsubServer) GetSchema(ctx context.Context, req *pubsubapi.SchemaRequest) (*pubsubapi.SchemaInfo, error) {
	rpcID := newRPCID()
	set := unarySetter(ctx)
	o, err := p.sb.authenticate(ctx, set, rpcID)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.cdc.init()
	es := o.cdc.schemas[req.GetSchemaId()]
	o.mu.Unlock()
	if es == nil || es.id != req.GetSchemaId() {
		return nil, psErr(set, codes.NotFound, "", "The schema "+req.GetSchemaId()+" was not found.", rpcID)
	}
	return &pubsubapi.SchemaInfo{SchemaJson: es.json, SchemaId: es.id, RpcId: rpcID}, nil
}

// psStream is a live Subscribe call, reachable by the drop knob.
type psStream struct {
	drop chan struct{}
}

// Subscribe is the pull-based, flow-controlled stream of §9.3.
func (p *pubsubServer) Subscribe(stream grpc.BidiStreamingServer[pubsubapi.FetchRequest, pubsubapi.FetchResponse]) error {
	ctx := stream.Context()
	rpcID := newRPCID()
	set := stream.SetTrailer
	o, err := p.sb.authenticate(ctx, set, rpcID)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	sel, ok := o.resolveTopic(first.GetTopicName())
	if !ok {
		return topicNotFound(set, o, first.GetTopicName(), rpcID)
	}
	if f := o.takePubSubFault(PubSubUnavailable); f != nil {
		return psErr(set, codes.Unavailable, "", "HTTP/2 server reset the stream.", rpcID)
	}
	// The replay position comes from the first request only (§9.3).
	cursor, err := o.startCursor(first, set, rpcID)
	if err != nil {
		return err
	}
	ps, unregister := o.registerStream()
	defer unregister()

	pending := 0
	add := func(n int32) {
		if n > 0 {
			pending = min(pending+int(n), maxPending)
		}
	}
	add(first.GetNumRequested())

	type recvd struct {
		req *pubsubapi.FetchRequest
		err error
	}
	reqs := make(chan recvd)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case reqs <- recvd{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	o.mu.Lock()
	b := o.cfg.Behavior
	o.mu.Unlock()
	lastResp := time.Now() // wall clock: keepalive and idle close are about real waiting
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake, stalled := o.pubsubWake()
		if !stalled && pending > 0 {
			evs, next, err := o.collect(cursor, sel, pending)
			if err != nil {
				return err
			}
			if len(evs) > 0 {
				n, err := o.spend(len(evs), set, rpcID)
				if err != nil {
					return err
				}
				if n < len(evs) {
					// The rest waits for the next call (the allocation is spent).
					evs = evs[:n]
					next, _ = o.parseReplayID(evs[n-1].GetReplayId())
				}
				pending -= len(evs)
				last := evs[len(evs)-1].GetReplayId()
				if err := stream.Send(&pubsubapi.FetchResponse{Events: evs, LatestReplayId: last, RpcId: rpcID, PendingNumRequested: int32(pending)}); err != nil {
					return err
				}
				cursor = next
				lastResp = time.Now()
				continue
			}
			cursor = next
		}
		// A stalled stream is silent: no events, no keepalive, no close.
		var timeout <-chan time.Time
		if !stalled {
			wait := b.PubSubIdleClose
			if pending > 0 {
				wait = b.PubSubKeepalive
			}
			timer.Reset(max(time.Until(lastResp.Add(wait)), 0))
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-ps.drop:
			return psErr(set, codes.Unavailable, "", "HTTP/2 server reset the stream.", rpcID)
		case r := <-reqs:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					return nil
				}
				return r.err
			}
			if t := r.req.GetTopicName(); t != "" && t != sel.name {
				return psErr(set, codes.InvalidArgument, "",
					"The topic name in a subsequent FetchRequest must match the first one.", rpcID)
			}
			add(r.req.GetNumRequested())
		case <-wake:
		case <-timeout:
			if pending == 0 {
				// Nothing asked for within the idle window: the stream closes
				// and the client must call Subscribe again (§9.3).
				return nil
			}
			// Keepalive: empty, with the bus's latest replay id, which may be
			// ahead of the last event this topic delivered (§9.3).
			if err := stream.Send(&pubsubapi.FetchResponse{LatestReplayId: o.latestReplayID(), RpcId: rpcID, PendingNumRequested: int32(pending)}); err != nil {
				return err
			}
			lastResp = time.Now()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// startCursor reads the replay preset of the first request: LATEST (the
// tip), EARLIEST (everything retained) or CUSTOM (after the given id).
func (o *Org) startCursor(first *pubsubapi.FetchRequest, set func(metadata.MD), rpcID string) (uint64, error) {
	now := msOf(o.now())
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	o.purgeCDCLocked(now)
	switch first.GetReplayPreset() {
	case pubsubapi.ReplayPreset_EARLIEST:
		return o.cdc.purgedThrough, nil
	case pubsubapi.ReplayPreset_CUSTOM:
		corrupted := func() error {
			return psErr(set, codes.InvalidArgument, ErrCodeReplayCorrupted, "The Replay ID validation failed.", rpcID)
		}
		if o.takePubSubFaultLocked(PubSubReplayCorrupted) != nil {
			return 0, corrupted()
		}
		seq, ok := o.parseReplayID(first.GetReplayId())
		// Unknown ids, ids ahead of the bus and ids whose following events
		// were purged (older than retention) all fail alike (§9.4).
		if !ok || seq > o.cdc.lastSeq || seq < o.cdc.purgedThrough {
			return 0, corrupted()
		}
		if o.takePubSubFaultLocked(PubSubRedeliver) != nil && seq > 0 {
			// At-least-once across reconnects: the event of the given id comes again.
			for i := len(o.cdc.events) - 1; i >= 0; i-- {
				if o.cdc.events[i].seq < seq {
					return o.cdc.events[i].seq, nil
				}
			}
			return o.cdc.purgedThrough, nil
		}
		return seq, nil
	default:
		return o.cdc.lastSeq, nil
	}
}

// collect returns up to n encoded events after cursor that the topic
// delivers, and the new cursor (past events it skipped).
func (o *Org) collect(cursor uint64, sel *topicSel, n int) ([]*pubsubapi.ConsumerEvent, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	evs := o.cdc.events
	i, _ := slices.BinarySearchFunc(evs, cursor+1, func(e cdcEvent, seq uint64) int {
		return cmpUint(e.seq, seq)
	})
	var out []*pubsubapi.ConsumerEvent
	for ; i < len(evs) && len(out) < n; i++ {
		e := &evs[i]
		cursor = e.seq
		m, ok := sel.members[e.entity]
		if !ok || !m.matches(e) {
			continue
		}
		es := o.cdc.schemas[e.schemaID]
		payload, err := o.encodeEvent(e, es, m)
		if err != nil {
			return nil, cursor, status.Error(codes.Internal, err.Error())
		}
		out = append(out, &pubsubapi.ConsumerEvent{
			Event:    &pubsubapi.ProducerEvent{Id: e.txKey + "-" + fmt.Sprint(e.seqNumber), SchemaId: e.schemaID, Payload: payload},
			ReplayId: o.replayID(e.seq),
		})
	}
	return out, cursor, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LatestReplayID is the bus's newest position: a CUSTOM subscription from
// it sees every change made after this call.
func (o *Org) LatestReplayID() []byte { return o.latestReplayID() }

func (o *Org) latestReplayID() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.replayID(o.cdc.lastSeq)
}

// pubsubWake returns the channel closed on the next change of the feed or
// of the knobs, and whether streams are stalled now.
func (o *Org) pubsubWake() (<-chan struct{}, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	stalled := false
	for _, f := range o.cdc.faults {
		stalled = stalled || f.f.Kind == PubSubStall
	}
	return o.cdc.wake, stalled
}

func (o *Org) registerStream() (*psStream, func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	o.cdc.streamSeq++
	id := o.cdc.streamSeq
	ps := &psStream{drop: make(chan struct{})}
	o.cdc.streams[id] = ps
	return ps, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		delete(o.cdc.streams, id)
	}
}

// spend counts up to n events against the org's rolling 24 h delivery
// allocation and returns how many may go; once it is spent the subscriber
// is refused and so disconnected (§9.9).
func (o *Org) spend(n int, set func(metadata.MD), rpcID string) (int, error) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	left := o.cfg.Behavior.DailyDeliveredEvents - o.deliveredLocked(now)
	if left <= 0 {
		st := codeByName(o.cfg.Behavior.PubSubLimitStatus, codes.ResourceExhausted)
		return 0, psErr(set, st, ErrCodeLimitExceeded, "You have exceeded the event delivery limit for your org.", rpcID)
	}
	n = min(n, left)
	at := msOf(now)
	for range n {
		o.cdc.delivered = append(o.cdc.delivered, at)
	}
	return n, nil
}

// deliveredLocked counts deliveries in the last 24 h; the caller holds Org.mu.
func (o *Org) deliveredLocked(now time.Time) int {
	cut := msOf(now.Add(-day))
	k := 0
	for k < len(o.cdc.delivered) && o.cdc.delivered[k] < cut {
		k++
	}
	if k > 0 {
		o.cdc.delivered = append(o.cdc.delivered[:0:0], o.cdc.delivered[k:]...)
	}
	return len(o.cdc.delivered)
}

// DeliveredEvents reports the org's delivered events in the rolling 24 h and its allocation.
func (o *Org) DeliveredEvents() (used, max int) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.deliveredLocked(now), o.cfg.Behavior.DailyDeliveredEvents
}

// SetEventAllocation sets the delivered-event allocation per 24 h and,
// when used >= 0, the count of deliveries already made (e.g. to the
// allocation, to exhaust it).
func (o *Org) SetEventAllocation(max, used int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if max > 0 {
		o.cfg.Behavior.DailyDeliveredEvents = max
	}
	if used >= 0 {
		// Counted as made now, so they leave the rolling window in 24 h.
		at := msOf(o.now())
		o.cdc.delivered = make([]int64, used)
		for i := range o.cdc.delivered {
			o.cdc.delivered[i] = at
		}
	}
}
