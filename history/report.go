package history

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// MaxReportOps caps the operations a report prints per failed key (the
// last ones before and around the failure are the interesting ones).
const MaxReportOps = 60

// MaxReportKeys caps the failed keys a report shows in full; the others
// are listed by key (Result.Failures has them all).
const MaxReportKeys = 10

// Report writes the verdict: the summary, each split, and for every failed
// key its diagnosis, the values it could hold when the segment began, its
// operations in time order (ms from the first call of the history) and
// the visualization's path.
func (r *Result) Report(w io.Writer) {
	fmt.Fprintln(w, r.Summary())
	fmt.Fprintf(w, "  judged %d operations; %d failed reads left out; %d failed writes taken as maybe\n",
		r.Judged, r.FailedReads, r.MaybeWrites)
	for i, s := range r.Splits {
		fmt.Fprintf(w, "  split %d: %s .. %s (%.0f .. %.0f ms) (%v): %d operations not judged (%d reads), %d keys written, %d deleted; heal rule judged for %d keys (%d with a single allowed value, %d kept an older value a later fetch touched)\n",
			i+1, s.Start.UTC().Format("15:04:05.000"), s.End.UTC().Format("15:04:05.000"),
			float64(s.Start.UnixNano()-r.Start)/1e6, float64(s.End.UnixNano()-r.Start)/1e6,
			s.End.Sub(s.Start).Round(time.Millisecond), s.Ops, s.Reads, s.KeysWritten, s.Deletes, s.HealKeys, s.HealExact, s.KeptByTouch)
	}
	if len(r.Unknown) > 0 {
		fmt.Fprintf(w, "  undecided (porcupine ran out of time): %s\n", strings.Join(first(r.Unknown, 10), " "))
	}
	for i, f := range r.Failures {
		if i == MaxReportKeys {
			var rest []string
			for _, g := range r.Failures[i:] {
				rest = append(rest, g.Key)
			}
			fmt.Fprintf(w, "... %d more failed keys: %s\n", len(rest), strings.Join(first(rest, 20), " "))
			break
		}
		fmt.Fprintln(w, f.Text(r.Start))
	}
}

// Text is one failed key's report; start is the history's first call.
func (f Failure) Text(start int64) string {
	var b strings.Builder
	where := "before the first split"
	if f.Segment > 0 {
		where = fmt.Sprintf("after heal %d", f.Segment)
	}
	fmt.Fprintf(&b, "key %s (%s): %s\n", f.Key, where, f.Diagnosis)
	fmt.Fprintf(&b, "  could hold at the start: %s\n", strings.Join(f.Initial, ", "))
	ops := f.Ops
	if len(ops) > MaxReportOps {
		fmt.Fprintf(&b, "  ... %d earlier operations\n", len(ops)-MaxReportOps)
		ops = ops[len(ops)-MaxReportOps:]
	}
	for _, op := range ops {
		fmt.Fprintf(&b, "  %10.3f .. %10.3f ms  %s\n", float64(op.Call-start)/1e6, float64(op.Return-start)/1e6, op)
	}
	if f.Visualization != "" {
		fmt.Fprintf(&b, "  visualization: %s\n", f.Visualization)
	}
	return b.String()
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("(+%d)", len(s)-n))
	}
	return s
}
