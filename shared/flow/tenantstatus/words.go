package tenantstatus

import (
	"fmt"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Field choices as operators type them (optoutctl flags, the page's form).
const (
	FlagEmailOptOut = "email-opt-out"
	FlagSalesOptOut = "sales-opt-out"
)

// FieldFlag names a field choice the way operators type it.
func FieldFlag(f tenant.Field) string {
	switch f {
	case tenant.EmailOptOut:
		return FlagEmailOptOut
	case tenant.SalesOptOut:
		return FlagSalesOptOut
	}
	return strings.ToLower(string(f))
}

// ParseFieldFlag reads email-opt-out or sales-opt-out (also the stored
// EMAIL_OPT_OUT and SALES_OPT_OUT).
func ParseFieldFlag(s string) (tenant.Field, bool) {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "_", "-")) {
	case FlagEmailOptOut:
		return tenant.EmailOptOut, true
	case FlagSalesOptOut:
		return tenant.SalesOptOut, true
	}
	return "", false
}

// FieldLabel is the name a Salesforce admin knows the choice by.
func FieldLabel(f tenant.Field) string {
	if f == tenant.SalesOptOut {
		return "Sales opt-out field"
	}
	return "Email Opt Out"
}

// HealthText says in a few words what the pusher is doing for a tenant.
func HealthText(h *tenant.Health) string {
	if h == nil || h.Mode == tenant.ModeHealthy || h.Mode == "" {
		return "healthy"
	}
	var s string
	switch h.Mode {
	case tenant.ModeUnhealthy:
		s = "unhealthy since " + FormatTime(h.Since)
		if !h.Until.IsZero() {
			s += ", next check " + FormatTime(h.Until)
		}
	case tenant.ModeBackoff:
		s = "backing off until " + FormatTime(h.Until)
	default:
		s = string(h.Mode) + " until " + FormatTime(h.Until)
	}
	if h.Reason != "" {
		s += ": " + h.Reason
	}
	return s
}

// FormatTime renders a time the same way everywhere: UTC, to the second,
// fixed width.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// FormatAge renders a duration the way people read waiting times:
// 45s, 12m, 3h20m, 2d4h.
func FormatAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

// ObjectText says how one object's describe shows a field.
func ObjectText(o ObjectField) string {
	switch {
	case !o.Present:
		return "missing"
	case o.Type != "" && o.Type != "boolean":
		return "not a checkbox (type " + o.Type + ")"
	case !o.Writable:
		return "read-only"
	}
	return "writable"
}
