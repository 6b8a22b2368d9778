package history

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// WindowsFromWatchLog reads the split windows out of a `migctl cluster
// watch` log: each stretch from a PARTITIONED line to the next HEALTHY one,
// widened by before and after. The watch notices a cut within milliseconds
// of Mnesia's event, and says HEALTHY when the islands have converged,
// before the heal's last step; the margins cover both. A split still open
// at the end of the log runs to the end of time.
func WindowsFromWatchLog(r io.Reader, before, after time.Duration) ([]Window, error) {
	var out []Window
	var open *Window
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || (f[1] != "PARTITIONED" && f[1] != "HEALTHY") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			continue // not a verdict line
		}
		switch {
		case f[1] == "PARTITIONED" && open == nil:
			open = &Window{Start: at.Add(-before)}
		case f[1] == "HEALTHY" && open != nil:
			open.End = at.Add(after)
			out = append(out, *open)
			open = nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read watch log: %w", err)
	}
	if open != nil {
		open.End = time.Unix(0, math.MaxInt64)
		out = append(out, *open)
	}
	// Widened windows may touch: merge them.
	merged := out[:0]
	for _, w := range out {
		if n := len(merged); n > 0 && !w.Start.After(merged[n-1].End) {
			if w.End.After(merged[n-1].End) {
				merged[n-1].End = w.End
			}
			continue
		}
		merged = append(merged, w)
	}
	return merged, nil
}
