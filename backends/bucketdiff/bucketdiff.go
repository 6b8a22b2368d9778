package bucketdiff

// Space is the size of the hash space: erlang:phash2(Id, Space).
const Space = uint64(1) << 32

// Span is a half-open range [Lo, Hi) of erlang:phash2(Id, 2^32).
type Span struct {
	Lo, Hi uint64
}

// Full covers every key.
var Full = Span{Lo: 0, Hi: Space}

// Range is a span cut into Buckets equal buckets.
type Range struct {
	Span
	Buckets int
}

// Even is the whole hash space in n buckets: bucket i holds the keys with
// H*n div 2^32 = i (the placement of migctl_cluster's fixed buckets).
func Even(n int) []Range { return []Range{{Span: Full, Buckets: n}} }

// Bucket returns the i-th bucket of r as a span. The node puts H in
// bucket (H-Lo)*B div W, so bucket i starts at the least H with
// (H-Lo)*B >= i*W: a ceiling division. Buckets of a span narrower than
// their count can be empty (Lo == Hi).
func (r Range) Bucket(i int) Span {
	w := r.Hi - r.Lo
	b := uint64(r.Buckets)
	return Span{Lo: r.Lo + ceilDiv(uint64(i)*w, b), Hi: r.Lo + ceilDiv(uint64(i+1)*w, b)}
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// Total is the number of buckets of rs, the length of a sums reply.
func Total(rs []Range) int {
	n := 0
	for _, r := range rs {
		n += r.Buckets
	}
	return n
}

// Sum is one bucket of one store.
type Sum struct {
	Count uint64
	Sum   uint64 // of the rows' 32-bit digests, mod 2^64
	// MaxWritten is the latest Mnesia record write time in the bucket (ms;
	// 0 when not asked for, or for ETS/DETS). Not part of the comparison.
	MaxWritten int64
}

// Same reports whether two buckets agree (count and sum).
func (s Sum) Same(o Sum) bool { return s.Count == o.Count && s.Sum == o.Sum }

// Add adds o into s: the sums of a store split over several nodes (a
// union) add up bucket by bucket, each session being on one member.
func (s *Sum) Add(o Sum) {
	s.Count += o.Count
	s.Sum += o.Sum
	s.MaxWritten = max(s.MaxWritten, o.MaxWritten)
}

// Diff returns the indexes of the buckets where a and b differ. Slices of
// different lengths differ at every index past the shorter one.
func Diff(a, b []Sum) []int {
	var out []int
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || !a[i].Same(b[i]) {
			out = append(out, i)
		}
	}
	return out
}

// Spans returns the buckets idx of the ranges rs (indexes over all of
// rs, as Diff gives them) as spans, adjacent ones joined.
func Spans(rs []Range, idx []int) []Span {
	var out []Span
	base, k := 0, 0
	for _, r := range rs {
		for ; k < len(idx) && idx[k] < base+r.Buckets; k++ {
			out = appendSpan(out, r.Bucket(idx[k]-base))
		}
		base += r.Buckets
	}
	return out
}

func appendSpan(out []Span, s Span) []Span {
	if s.Lo == s.Hi {
		return out
	}
	if n := len(out); n > 0 && out[n-1].Hi == s.Lo {
		out[n-1].Hi = s.Hi
		return out
	}
	return append(out, s)
}

// Merge turns sorted spans into one-bucket ranges, adjacent spans joined:
// the request for the keys of the buckets that differ.
func Merge(ss []Span) []Range {
	var joined []Span
	for _, s := range ss {
		joined = appendSpan(joined, s)
	}
	out := make([]Range, len(joined))
	for i, s := range joined {
		out[i] = Range{Span: s, Buckets: 1}
	}
	return out
}

// Round is the outcome of comparing the sums of one round of a bisection.
type Round struct {
	// Matched is the number of rows in buckets that agree.
	Matched int64
	// Differ are the buckets that differ, in order.
	Differ []Span
	// Rows is the larger side's row count over the differing buckets.
	Rows int64
}

// Compare compares two stores' sums of the same ranges.
func Compare(rs []Range, a, b []Sum) Round {
	var r Round
	i := 0
	for _, rg := range rs {
		for k := 0; k < rg.Buckets; k, i = k+1, i+1 {
			if a[i].Same(b[i]) {
				r.Matched += int64(a[i].Count)
				continue
			}
			r.Differ = append(r.Differ, rg.Bucket(k))
			r.Rows += int64(max(a[i].Count, b[i].Count))
		}
	}
	return r
}

// Next decides the bisection's next step after a round: done (nothing
// differs: both nil), list (the differing buckets hold at most listRows
// rows, or none can be split further: list is the keys request), or split
// (each differing bucket cut into up to factor buckets for another round
// of sums).
func (r Round) Next(listRows int64, factor int) (list, split []Range) {
	if len(r.Differ) == 0 {
		return nil, nil
	}
	splittable := false
	for _, d := range r.Differ {
		if d.Hi-d.Lo > 1 {
			splittable = true
			break
		}
	}
	if r.Rows <= listRows || !splittable {
		return Merge(r.Differ), nil
	}
	split = make([]Range, 0, len(r.Differ))
	for _, d := range r.Differ {
		split = append(split, Range{Span: d, Buckets: int(min(uint64(factor), d.Hi-d.Lo))})
	}
	return nil, split
}
