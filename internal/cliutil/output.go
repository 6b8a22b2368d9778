package cliutil

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// Format is the -o value.
type Format string

// Output formats.
const (
	Table Format = "table"
	JSON  Format = "json"
	// JSONLines is JSON on one line: each report of a --watch loop is one
	// line a script can read as it comes. Not a -o value.
	JSONLines Format = "json-lines"
)

// ParseFormat validates -o.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case Table, JSON:
		return Format(s), nil
	}
	return "", Usage("unknown output format %q (want table or json)", s)
}

// Print writes v as indented JSON, or calls table with a tabwriter.
// JSON output is the library's own types, so scripts and tests decode it
// into them.
func Print(w io.Writer, f Format, v any, table func(tw *tabwriter.Writer)) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case JSONLines:
		return json.NewEncoder(w).Encode(v)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// Row writes tab-separated cells and a newline.
func Row(tw io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c)
	}
	fmt.Fprintln(tw)
}
