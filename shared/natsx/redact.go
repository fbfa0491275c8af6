package natsx

import (
	"net/url"

	"github.com/optout-sync/optout-sync/shared/config"
)

// redactURL hides credentials embedded in a NATS URL (nats://user:pw@host),
// also in a URL that does not parse (a typo in the port).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return config.MaskUserinfo(raw)
	}
	if u.User == nil {
		return raw
	}
	u.User = url.User("redacted")
	return u.String()
}

// redactedError keeps err's chain (errors.Is/As) but not its text, which a
// parser may have built by quoting the URL, credentials and all.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redactErr(err error) error {
	return &redactedError{msg: config.MaskUserinfo(err.Error()), err: err}
}
