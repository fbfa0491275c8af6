package natsx

import "net/url"

// redactURL hides credentials embedded in a NATS URL (nats://user:pw@host).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("redacted")
	return u.String()
}
