package salesforce

import (
	"context"
	"net/http"
	"net/url"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// Spans must never carry record ids, SOQL (which lists ids) or tokens, but
// otelhttp records url.full from the request it sees. So the request that
// reaches otelhttp carries a sanitized URL (the path template, no query); the
// real URL travels in the context and is put back just below otelhttp.
//
//	http.Client → sanitizer → otelhttp.Transport → restorer → base transport

type spanInfoKey struct{}
type realURLKey struct{}

// spanInfo names a request's span and gives the URL recorded for it.
type spanInfo struct {
	name string   // "PATCH /composite/sobjects"
	safe *url.URL // host + path template, no query
}

func withSpanInfo(ctx context.Context, name string, safe *url.URL) context.Context {
	return context.WithValue(ctx, spanInfoKey{}, spanInfo{name: name, safe: safe})
}

type sanitizer struct{ next http.RoundTripper }

func (t sanitizer) RoundTrip(r *http.Request) (*http.Response, error) {
	var safe *url.URL
	if info, ok := r.Context().Value(spanInfoKey{}).(spanInfo); ok && info.safe != nil {
		safe = info.safe
	} else {
		// Unnamed request (e.g. a redirect target): keep host and path only.
		u := *r.URL
		u.User, u.RawQuery, u.Fragment, u.ForceQuery = nil, "", "", false
		safe = &u
	}
	r2 := r.WithContext(context.WithValue(r.Context(), realURLKey{}, r.URL))
	r2.URL = safe
	return t.next.RoundTrip(r2)
}

type restorer struct{ base http.RoundTripper }

func (t restorer) RoundTrip(r *http.Request) (*http.Response, error) {
	if real, ok := r.Context().Value(realURLKey{}).(*url.URL); ok {
		r2 := r.WithContext(r.Context()) // shallow copy; keeps the injected trace headers
		r2.URL = real
		r = r2
	}
	return t.base.RoundTrip(r)
}

func spanName(_ string, r *http.Request) string {
	if info, ok := r.Context().Value(spanInfoKey{}).(spanInfo); ok && info.name != "" {
		return info.name
	}
	return r.Method + " " + r.URL.Path // r.URL is already the sanitized one
}

// instrument wraps base so every request is one client span named by its
// path template.
func instrument(base *http.Client, s *settings) *http.Client {
	c := *base
	opts := []otelhttp.Option{otelhttp.WithSpanNameFormatter(spanName)}
	if s.tracer != nil {
		opts = append(opts, otelhttp.WithTracerProvider(s.tracer))
	}
	if s.meter != nil {
		opts = append(opts, otelhttp.WithMeterProvider(s.meter))
	}
	c.Transport = sanitizer{next: otelhttp.NewTransport(restorer{base: base.Transport}, opts...)}
	return &c
}
