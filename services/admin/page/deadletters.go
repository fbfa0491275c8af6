package page

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// retryView is what the last "Retry these" did, carried by the redirect.
type retryView struct {
	Code                    string
	Replayed, Invalid, Gone int
}

func retryResult(q url.Values) *retryView {
	if q.Get("retried") == "" {
		return nil
	}
	n := func(k string) int { v, _ := strconv.Atoi(q.Get(k)); return v }
	return &retryView{Code: q.Get("retried"), Replayed: n("replayed"), Invalid: n("invalid"), Gone: n("gone")}
}

// retryDeadLetters replays a tenant's dead letters of one cause to its
// events subject (deadletter.DLQ.Replay: re-validated, original bytes, the
// DLQ copy removed), after an admin fixed the cause. A copy that still fails
// validation stays in the DLQ and is counted as such. POST with the page's
// form token; 303 back to the section with the counts.
func (h *handler) retryDeadLetters(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok || !h.formTokenValid(w, r, t) {
		return
	}
	code := r.PostForm.Get("code")
	ctx := r.Context()
	groups, err := tenantstatus.GroupDeadLetters(ctx, *h.d.DLQ, t)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res := retryView{Code: code}
	for _, g := range groups {
		if g.Code != code {
			continue
		}
		for _, seq := range g.Seqs {
			_, err := h.d.DLQ.Replay(ctx, t, seq, time.Now())
			var invalid *deadletter.InvalidError
			switch {
			case err == nil:
				res.Replayed++
			case errors.As(err, &invalid):
				res.Invalid++
			case errors.Is(err, deadletter.ErrDeadLetterNotFound):
				res.Gone++ // replayed or purged meanwhile
			default:
				h.fail(w, r, fmt.Errorf("retry dead letter %d: %w", seq, err))
				return
			}
		}
	}
	h.d.Log.Info().Str(logx.FieldTenant, t).Str("actor", sessionOf(ctx).actor).Str("code", code).
		Int("replayed", res.Replayed).Int("still_invalid", res.Invalid).Msg("dead letters retried on the admin page")
	q := url.Values{"retried": {code}, "replayed": {strconv.Itoa(res.Replayed)}, "invalid": {strconv.Itoa(res.Invalid)}, "gone": {strconv.Itoa(res.Gone)}}
	http.Redirect(w, r, h.prefix+"/tenants/"+t+"?"+q.Encode()+"#dead-letters-h", http.StatusSeeOther)
}
