package sandbox

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
)

// apiError is one element of a REST error array.
type apiError struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields,omitempty"`
}

// apiErrorWithFields always carries "fields", for the answers where
// Salesforce sends an empty list (e.g. ENTITY_IS_DELETED).
type apiErrorWithFields struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers the usual [{"message","errorCode"[,"fields"]}] body.
// fields == nil omits the key; a non-nil empty slice sends "fields":[].
func writeError(w http.ResponseWriter, status int, code, msg string, fields []string) {
	if fields != nil {
		writeJSON(w, status, []apiErrorWithFields{{Message: msg, ErrorCode: code, Fields: fields}})
		return
	}
	writeJSON(w, status, []apiError{{Message: msg, ErrorCode: code}})
}

// oauthError answers a token-endpoint failure.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

const msgNotFound = "The requested resource does not exist"

// recorder captures the status for the call log and can swallow the whole
// answer (DropAfterWrite) so the connection can be closed unanswered.
type recorder struct {
	http.ResponseWriter
	status  int
	discard bool
	wrote   bool
}

func (r *recorder) WriteHeader(code int) {
	if r.wrote {
		return
	}
	r.wrote = true
	r.status = code
	if !r.discard {
		r.ResponseWriter.WriteHeader(code)
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if r.discard {
		return len(b), nil
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok && !r.discard {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// dropConnection closes the connection without answering. It prefers the
// Hijacker; where that is unavailable (HTTP/2) it aborts the handler, which
// net/http turns into a reset stream.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, like a dropped load balancer connection
	}
	_ = conn.Close()
}
