package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// recordJSON is a record on the control API, with Salesforce field names.
type recordJSON struct {
	ID                 string    `json:"Id,omitempty"`
	Type               string    `json:"type"`
	Email              string    `json:"Email"`
	HasOptedOutOfEmail bool      `json:"HasOptedOutOfEmail"`
	CustomOptOut       bool      `json:"CustomOptOut"`
	IsDeleted          bool      `json:"IsDeleted"`
	IsConverted        bool      `json:"IsConverted"`
	ConvertedContactID string    `json:"ConvertedContactId,omitempty"`
	LastModifiedDate   time.Time `json:"LastModifiedDate"`
	SystemModstamp     time.Time `json:"SystemModstamp"`
}

func toJSONRecord(r Record) recordJSON { return recordJSON(r) }

func (r recordJSON) record() Record { return Record(r) }

// faultJSON is a Fault on the control API; durations are Go strings ("2s").
type faultJSON struct {
	Route           string    `json:"route,omitempty"`
	RecordID        string    `json:"recordId,omitempty"`
	Status          int       `json:"status,omitempty"`
	ErrorCode       string    `json:"errorCode,omitempty"`
	Message         string    `json:"message,omitempty"`
	HTML            bool      `json:"html,omitempty"`
	RetryAfter      string    `json:"retryAfter,omitempty"`
	DropBeforeWrite bool      `json:"dropBeforeWrite,omitempty"`
	DropAfterWrite  bool      `json:"dropAfterWrite,omitempty"`
	Delay           string    `json:"delay,omitempty"`
	Skip            int       `json:"skip,omitempty"`
	Times           int       `json:"times,omitempty"`
	Share           float64   `json:"share,omitempty"`
	Until           time.Time `json:"until,omitempty"`
	BulkState       string    `json:"bulkState,omitempty"`
}

func (f faultJSON) fault() (Fault, error) {
	out := Fault{Route: f.Route, RecordID: f.RecordID, Status: f.Status, ErrorCode: f.ErrorCode, Message: f.Message,
		HTML: f.HTML, RetryAfter: f.RetryAfter, DropBeforeWrite: f.DropBeforeWrite, DropAfterWrite: f.DropAfterWrite,
		Skip: f.Skip, Times: f.Times, Share: f.Share, Until: f.Until, BulkState: f.BulkState}
	if f.Delay != "" {
		d, err := time.ParseDuration(f.Delay)
		if err != nil {
			return out, fmt.Errorf("delay: %w", err)
		}
		out.Delay = d
	}
	return out, nil
}

func toFaultJSON(f Fault) faultJSON {
	out := faultJSON{Route: f.Route, RecordID: f.RecordID, Status: f.Status, ErrorCode: f.ErrorCode, Message: f.Message,
		HTML: f.HTML, RetryAfter: f.RetryAfter, DropBeforeWrite: f.DropBeforeWrite, DropAfterWrite: f.DropAfterWrite,
		Skip: f.Skip, Times: f.Times, Share: f.Share, Until: f.Until, BulkState: f.BulkState}
	if f.Delay > 0 {
		out.Delay = f.Delay.String()
	}
	return out
}

type callJSON struct {
	Route           string     `json:"route"`
	Method          string     `json:"method"`
	Path            string     `json:"path"`
	Status          int        `json:"status"`
	AutoAssign      string     `json:"autoAssign,omitempty"`
	Client          string     `json:"client,omitempty"`
	Records         int        `json:"records,omitempty"`
	At              time.Time  `json:"at"`
	AssignmentRules bool       `json:"assignmentRules"`
	Counted         bool       `json:"counted"`
	FaultID         string     `json:"faultId,omitempty"`
	Subrequests     []callJSON `json:"subrequests,omitempty"`
}

func toCallJSON(c Call) callJSON {
	out := callJSON{Route: c.Route, Method: c.Method, Path: c.Path, Status: c.Status, AutoAssign: c.AutoAssign,
		Client: c.Client, Records: c.Records, At: c.At, AssignmentRules: c.AssignmentRules, Counted: c.Counted, FaultID: c.FaultID}
	for _, s := range c.Subrequests {
		out.Subrequests = append(out.Subrequests, toCallJSON(s))
	}
	return out
}

func ctlError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func decodeCtl(r *http.Request, v any) error {
	data, err := readBody(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	return nil
}

// serveControl dispatches /_sandbox/ (documented in README.md).
func (s *Sandbox) serveControl(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/_sandbox"), "/"), "/")
	if len(segs) == 1 && segs[0] == "orgs" && r.Method == http.MethodGet {
		type orgInfo struct {
			Name        string   `json:"name"`
			BaseURL     string   `json:"baseUrl"`
			TokenURL    string   `json:"tokenUrl"`
			OrgID       string   `json:"orgId"`
			ClientID    string   `json:"clientId"`
			Username    string   `json:"username"`
			APIVersions []string `json:"apiVersions"`
		}
		out := []orgInfo{}
		for _, n := range s.names {
			o := s.orgs[n]
			cfg := o.Config()
			info := orgInfo{Name: n, BaseURL: o.URL(), OrgID: o.OrgID(),
				ClientID: cfg.ClientID, Username: cfg.Username, APIVersions: cfg.APIVersions}
			if info.BaseURL != "" { // empty until the org is served (SetURL)
				info.TokenURL = info.BaseURL + "/services/oauth2/token"
			}
			out = append(out, info)
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if len(segs) < 3 || segs[0] != "orgs" {
		ctlError(w, http.StatusNotFound, errors.New("unknown control route"))
		return
	}
	o := s.orgs[segs[1]]
	if o == nil {
		ctlError(w, http.StatusNotFound, fmt.Errorf("unknown org %q", segs[1]))
		return
	}
	o.serveControl(w, r, segs[2:])
}

func (o *Org) serveControl(w http.ResponseWriter, r *http.Request, segs []string) {
	m := r.Method
	key := m + " " + segs[0]
	n := len(segs)
	switch {
	case key == "POST seed" && n == 1:
		var spec struct {
			Contacts      int     `json:"contacts"`
			Leads         int     `json:"leads"`
			OptedOutShare float64 `json:"optedOutShare"`
		}
		if err := decodeCtl(r, &spec); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		recs := o.Seed(SeedSpec{Contacts: spec.Contacts, Leads: spec.Leads, OptedOutShare: spec.OptedOutShare})
		out := map[string]any{"created": spec.Contacts + spec.Leads}
		if len(recs) <= 1000 {
			list := make([]recordJSON, len(recs))
			for i, rr := range recs {
				list[i] = toJSONRecord(rr)
			}
			out["records"] = list
		}
		writeJSON(w, http.StatusOK, out)
	case key == "GET records" && n == 1:
		q := r.URL.Query()
		offset, _ := strconv.Atoi(q.Get("offset"))
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit <= 0 {
			limit = 1000
		}
		all := o.Records()
		list := []recordJSON{}
		skipped := 0
		for _, rr := range all {
			if t := q.Get("type"); t != "" && !strings.EqualFold(t, rr.Type) {
				continue
			}
			if skipped < offset {
				skipped++
				continue
			}
			if len(list) >= limit {
				break
			}
			list = append(list, toJSONRecord(rr))
		}
		writeJSON(w, http.StatusOK, map[string]any{"total": len(all), "records": list})
	case key == "PUT records" && n == 1:
		var in recordJSON
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		rec := in.record()
		if _, err := fromRecordCheck(rec); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, toJSONRecord(o.Put(rec)))
	case key == "GET records" && n == 2:
		rr, ok := o.Get(segs[1])
		if !ok {
			ctlError(w, http.StatusNotFound, ErrNotFound)
			return
		}
		writeJSON(w, http.StatusOK, toJSONRecord(rr))
	case key == "PATCH records" && n == 2:
		var in struct {
			Email              *string `json:"Email"`
			HasOptedOutOfEmail *bool   `json:"HasOptedOutOfEmail"`
			CustomOptOut       *bool   `json:"CustomOptOut"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		edit := func(rr *Record) {
			if in.Email != nil {
				rr.Email = *in.Email
			}
			if in.HasOptedOutOfEmail != nil {
				rr.HasOptedOutOfEmail = *in.HasOptedOutOfEmail
			}
			if in.CustomOptOut != nil {
				rr.CustomOptOut = *in.CustomOptOut
			}
		}
		var err error
		if r.URL.Query().Get("as") == "automation" {
			err = o.EditAsAutomation(segs[1], edit)
		} else {
			err = o.Edit(segs[1], edit)
		}
		o.answerRecord(w, segs[1], err)
	case key == "DELETE records" && n == 2:
		o.answerRecord(w, segs[1], o.Delete(segs[1]))
	case key == "POST records" && n == 3 && segs[2] == "undelete":
		o.answerRecord(w, segs[1], o.Undelete(segs[1]))
	case key == "POST records" && n == 3 && segs[2] == "convert":
		c, err := o.ConvertLead(segs[1])
		if err != nil {
			ctlError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, toJSONRecord(c))
	case key == "POST records" && n == 3 && segs[2] == "merge":
		var in struct {
			Losers []string `json:"losers"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		o.answerRecord(w, segs[1], o.Merge(segs[1], in.Losers))
	case key == "POST tokens" && n == 2 && segs[1] == "expire":
		o.ExpireTokens()
		w.WriteHeader(http.StatusNoContent)
	case key == "POST tokens" && n == 2 && segs[1] == "refresh":
		writeJSON(w, http.StatusOK, map[string]string{"refresh_token": o.IssueRefreshToken()})
	case key == "POST tokens" && n == 2 && segs[1] == "revoke":
		var in struct {
			Token string `json:"token"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"revoked": o.RevokeToken(in.Token)})
	case key == "PUT latency" && n == 1:
		var in struct {
			Latency string `json:"latency"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		d, err := time.ParseDuration(in.Latency)
		if err != nil {
			ctlError(w, http.StatusBadRequest, fmt.Errorf("latency: %w", err))
			return
		}
		o.SetLatency(d)
		w.WriteHeader(http.StatusNoContent)
	case key == "GET faults" && n == 1:
		type active struct {
			ID      string    `json:"id"`
			Fault   faultJSON `json:"fault"`
			Seen    int       `json:"seen"`
			Applied int       `json:"applied"`
		}
		out := []active{}
		for _, f := range o.Faults() {
			out = append(out, active{ID: f.ID, Fault: toFaultJSON(f.Fault), Seen: f.Seen, Applied: f.Applied})
		}
		writeJSON(w, http.StatusOK, out)
	case key == "POST faults" && n == 1:
		var in faultJSON
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		f, err := in.fault()
		if err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": o.InjectFault(f)})
	case key == "DELETE faults" && n == 1:
		o.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case key == "DELETE faults" && n == 2:
		if !o.ClearFault(segs[1]) {
			ctlError(w, http.StatusNotFound, fmt.Errorf("fault %s not active", segs[1]))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case key == "PUT custom-field" && n == 1:
		var in struct {
			Installed bool `json:"installed"`
			Writable  bool `json:"writable"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		o.SetCustomField(in.Installed, in.Writable)
		w.WriteHeader(http.StatusNoContent)
	case key == "GET api-usage" && n == 1:
		writeJSON(w, http.StatusOK, map[string]int{"used": o.APICalls(), "max": o.Config().DailyAPILimit})
	case key == "PUT api-usage" && n == 1:
		var in struct {
			Used *int `json:"used"`
			Max  *int `json:"max"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		if in.Used != nil {
			o.SetAPIUsage(*in.Used)
		}
		if in.Max != nil {
			o.SetDailyAPILimit(*in.Max)
		}
		writeJSON(w, http.StatusOK, map[string]int{"used": o.APICalls(), "max": o.Config().DailyAPILimit})
	case key == "GET calls" && n == 1:
		out := []callJSON{}
		for _, c := range o.Calls() {
			out = append(out, toCallJSON(c))
		}
		writeJSON(w, http.StatusOK, map[string]any{"apiCalls": o.APICalls(), "calls": out})
	case key == "DELETE calls" && n == 1:
		o.ResetCalls()
		w.WriteHeader(http.StatusNoContent)
	case key == "GET changes" && n == 1:
		writeJSON(w, http.StatusOK, o.Changes())
	case key == "POST query-locators" && n == 2 && segs[1] == "expire":
		o.ExpireQueryLocators()
		w.WriteHeader(http.StatusNoContent)
	case key == "GET bulk-jobs" && n == 1:
		type job struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		out := []job{}
		for _, id := range o.BulkJobIDs() {
			st, _ := o.BulkJobState(id)
			out = append(out, job{ID: id, State: st})
		}
		writeJSON(w, http.StatusOK, out)
	case key == "PUT bulk-jobs" && n == 3 && segs[2] == "state":
		var in struct {
			State        string `json:"state"`
			ErrorMessage string `json:"errorMessage"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		if err := o.SetBulkJobState(segs[1], in.State, in.ErrorMessage); err != nil {
			ctlError(w, statusOf(err), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case segs[0] == "pubsub" && n >= 2:
		o.servePubSubControl(w, r, segs[1:])
	default:
		ctlError(w, http.StatusNotFound, fmt.Errorf("unknown control route %s /_sandbox/orgs/%s/%s", m, o.cfg.Name, strings.Join(segs, "/")))
	}
}

// servePubSubControl serves /_sandbox/orgs/{org}/pubsub/... (README "Pub/Sub API").
func (o *Org) servePubSubControl(w http.ResponseWriter, r *http.Request, segs []string) {
	key := r.Method + " " + segs[0]
	n := len(segs)
	switch {
	case key == "GET events" && n == 1:
		writeJSON(w, http.StatusOK, o.ChangeEvents())
	case key == "POST events" && n == 1:
		var in struct {
			ChangeType string   `json:"changeType"`
			Entity     string   `json:"entityName"`
			RecordIDs  []string `json:"recordIds"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		var err error
		if in.ChangeType == ChangeGapOverflow {
			err = o.PublishOverflow(in.Entity)
		} else {
			err = o.PublishGap(in.Entity, in.ChangeType, in.RecordIDs)
		}
		if err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case key == "POST purge" && n == 1:
		o.PurgeChangeEvents()
		w.WriteHeader(http.StatusNoContent)
	case key == "GET faults" && n == 1:
		writeJSON(w, http.StatusOK, o.PubSubFaults())
	case key == "POST faults" && n == 1:
		var in PubSubFault
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		id, err := o.InjectPubSubFault(in)
		if err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": id})
	case key == "DELETE faults" && n == 1:
		o.ClearPubSubFaults()
		w.WriteHeader(http.StatusNoContent)
	case key == "DELETE faults" && n == 2:
		if !o.ClearPubSubFault(segs[1]) {
			ctlError(w, http.StatusNotFound, fmt.Errorf("Pub/Sub fault %s not active", segs[1]))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case key == "GET allocation" && n == 1:
		used, max := o.DeliveredEvents()
		writeJSON(w, http.StatusOK, map[string]int{"used": used, "max": max})
	case key == "PUT allocation" && n == 1:
		var in struct {
			Used *int `json:"used"`
			Max  *int `json:"max"`
		}
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		mx, used := 0, -1
		if in.Max != nil {
			mx = *in.Max
		}
		if in.Used != nil {
			used = *in.Used
		}
		o.SetEventAllocation(mx, used)
		u, m := o.DeliveredEvents()
		writeJSON(w, http.StatusOK, map[string]int{"used": u, "max": m})
	case key == "GET channels" && n == 1:
		writeJSON(w, http.StatusOK, o.Channels())
	case key == "PUT channels" && n == 2:
		var in Channel
		if err := decodeCtl(r, &in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		in.Name = segs[1]
		if err := o.SetChannel(in); err != nil {
			ctlError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case key == "DELETE channels" && n == 2:
		if !o.DeleteChannel(segs[1]) {
			ctlError(w, http.StatusNotFound, fmt.Errorf("channel %s not found", segs[1]))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		ctlError(w, http.StatusNotFound, fmt.Errorf("unknown control route %s /_sandbox/orgs/%s/pubsub/%s", r.Method, o.cfg.Name, strings.Join(segs, "/")))
	}
}

// answerRecord answers a record mutation with the record now stored.
func (o *Org) answerRecord(w http.ResponseWriter, id string, err error) {
	if err != nil {
		ctlError(w, statusOf(err), err)
		return
	}
	rr, _ := o.Get(id)
	writeJSON(w, http.StatusOK, toJSONRecord(rr))
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrJobNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrDeleted), errors.Is(err, ErrNotDeleted), errors.Is(err, ErrConverted):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// fromRecordCheck validates a control-API record before Put (which panics on bad input).
func fromRecordCheck(r Record) (rec, error) {
	if r.ID == "" {
		if _, ok := typeByName(r.Type); !ok {
			return rec{}, fmt.Errorf("type %q is neither Contact nor Lead", r.Type)
		}
		return rec{}, nil
	}
	return fromRecord(r)
}
