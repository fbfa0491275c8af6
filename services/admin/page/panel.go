package page

import (
	"context"
	"io"
)

// Panel is an extra read-only section of a tenant's page. The page lists its
// panels after the built-in sections, each under its own heading; the
// nightly reconciler's "last runs with their reports" is meant to be one
// (implemented next to the run reports, and added to Deps.Panels where the
// page is wired), so the page needs no change when it arrives.
type Panel interface {
	// ID is the section's HTML id, unique on the page ("nightly-runs").
	ID() string
	// Heading is the section's h2 text.
	Heading() string
	// Render writes the section's body for tenant. It should write with
	// html/template so everything is escaped. An error is shown in the
	// section instead of its body, never hidden.
	Render(ctx context.Context, w io.Writer, tenant string) error
}
