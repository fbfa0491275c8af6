// Package csvx writes CSV that is safe to open in a spreadsheet: the one
// writer every CSV export of the project uses (optoutctl, the admin page).
package csvx

import (
	"encoding/csv"
	"io"
	"strings"
)

// Writer writes rows, escaping values a spreadsheet would run as formulas.
type Writer struct{ w *csv.Writer }

// New writes header and returns the writer for the rows.
func New(w io.Writer, header []string) (*Writer, error) {
	c := &Writer{w: csv.NewWriter(w)}
	return c, c.w.Write(header)
}

// Write writes one row. A value starting with =, +, -, @, tab or CR would be
// run as a formula by spreadsheet programs, and reasons come from upstream
// publishers' free text, so such a value gets a leading apostrophe (the
// OWASP advice for CSV injection).
func (c *Writer) Write(row []string) error {
	safe := make([]string, len(row))
	for i, v := range row {
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			v = "'" + v
		}
		safe[i] = v
	}
	return c.w.Write(safe)
}

// Flush ends the output.
func (c *Writer) Flush() error {
	c.w.Flush()
	return c.w.Error()
}
