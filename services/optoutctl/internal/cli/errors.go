package cli

import (
	"errors"
	"fmt"
	"strings"
)

// Exit codes scripts can rely on. They never change meaning.
const (
	ExitOK = 0
	// ExitError: the command failed (NATS or Salesforce unreachable, a
	// write refused, anything unexpected).
	ExitError = 1
	// ExitUsage: wrong command, flag or argument, or invalid input (a
	// setting or event the contract refuses).
	ExitUsage = 2
	// ExitNotFound: the tenant, person or dead letter does not exist.
	ExitNotFound = 3
	// ExitPrereq: a prerequisite is not met: NATS not provisioned, a
	// tenant's Salesforce setup failing, a dead letter still invalid.
	ExitPrereq = 4
)

// Error is a failure with its exit code. Msg is one line that says what
// went wrong and what to do.
type Error struct {
	Code int
	Msg  string
	Err  error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func newErr(code int, err error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: err}
}

// Usagef is a usage error (exit 2).
func Usagef(format string, args ...any) error { return newErr(ExitUsage, nil, format, args...) }

// NotFoundf is a not-found error (exit 3).
func NotFoundf(format string, args ...any) error { return newErr(ExitNotFound, nil, format, args...) }

// Prereqf is a failed prerequisite (exit 4).
func Prereqf(format string, args ...any) error { return newErr(ExitPrereq, nil, format, args...) }

// Failf is a failure (exit 1) wrapping err.
func Failf(err error, format string, args ...any) error {
	return newErr(ExitError, err, format, args...)
}

// CodeOf returns the exit code for err.
func CodeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitError
}

// oneLine keeps an error on one line, as scripts and log collectors expect.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	parts := strings.Split(strings.TrimSpace(s), "\n")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, "; ")
}
