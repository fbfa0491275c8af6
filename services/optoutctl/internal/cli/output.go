package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/optout-sync/optout-sync/shared/platform/csvx"
)

// Table is tabular output: aligned columns for people, CSV on request.
type Table struct {
	Header []string
	Rows   [][]string
	// Empty is printed instead of a header-only table.
	Empty string
}

// Print writes data in the invocation's format: v as JSON for -o json, the
// table for -o table and -o csv. t may be nil for JSON-only output.
func (inv *Invocation) Print(t *Table, v any) error {
	switch inv.Output {
	case FormatJSON:
		return WriteJSON(inv.Stdout, v)
	case FormatCSV:
		if t == nil {
			return Usagef("'%s' has no CSV output; use -o json", inv.Path)
		}
		return WriteCSV(inv.Stdout, t.Header, t.Rows)
	}
	if t == nil {
		return WriteJSON(inv.Stdout, v)
	}
	return t.Write(inv.Stdout)
}

// Write renders aligned columns.
func (t *Table) Write(w io.Writer) error {
	if len(t.Rows) == 0 && t.Empty != "" {
		_, err := fmt.Fprintln(w, t.Empty)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Header, "\t"))
	for _, r := range t.Rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// cell keeps a value on one line and in one column.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}

// WriteJSON writes v indented, with a final newline.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// CSVWriter writes rows safe to open in a spreadsheet (csvx: the one
// writer of every CSV export, the admin page's too).
type CSVWriter = csvx.Writer

// NewCSV starts CSV output with a header row.
func NewCSV(w io.Writer, header []string) (*CSVWriter, error) { return csvx.New(w, header) }

// WriteCSV writes a whole table as CSV.
func WriteCSV(w io.Writer, header []string, rows [][]string) error {
	c, err := NewCSV(w, header)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if err := c.Write(r); err != nil {
			return err
		}
	}
	return c.Flush()
}

// KV is a "describe" block: one labelled value per line, labels aligned.
type KV struct {
	rows [][2]string
}

// Add appends a line; an empty value prints as "-".
func (k *KV) Add(label, value string) { k.rows = append(k.rows, [2]string{label, value}) }

// Write renders the block.
func (k *KV) Write(w io.Writer) error {
	width := 0
	for _, r := range k.rows {
		width = max(width, len(r[0]))
	}
	for _, r := range k.rows {
		v := r[1]
		if v == "" {
			v = "-"
		}
		if _, err := fmt.Fprintf(w, "%-*s  %s\n", width, r[0], v); err != nil {
			return err
		}
	}
	return nil
}
