package cliutil

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
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
// into them. An empty list is [] (never null: `jq length` and a script's
// loop work on it).
//
// The convention every table follows: a header row in capitals for each
// section, sections separated by an empty Row (which also ends tabwriter's
// column block, so a section's columns are its own), and a final
// "result" row saying what happened when the command changes something.
// Cells go through Cell: yes/no for booleans, lists as a, b.
func Print(w io.Writer, f Format, v any, table func(tw *tabwriter.Writer)) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []any{}
	}
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

// Row writes tab-separated cells (each through Cell) and a newline.
func Row(tw io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, Cell(c))
	}
	fmt.Fprintln(tw)
}

// Cell is how a value reads in a table: yes/no for a boolean (never
// true/false), a list as "a, b" (never Go's [a b]), "-" for an empty list.
func Cell(v any) string {
	switch x := v.(type) {
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case []string:
		if len(x) == 0 {
			return "-"
		}
		return strings.Join(x, ", ")
	case fmt.Stringer:
		return x.String()
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
		if rv.Len() == 0 {
			return "-"
		}
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = Cell(rv.Index(i).Interface())
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprint(v)
}
