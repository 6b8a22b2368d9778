package bucketdiff

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// place is the node's placement (migctl_buckets): the bucket index of H
// in r, or -1 outside it.
func place(r Range, h uint64) int {
	if h < r.Lo || h >= r.Hi {
		return -1
	}
	return int((h - r.Lo) * uint64(r.Buckets) / (r.Hi - r.Lo))
}

func TestBucketBoundsMatchThePlacement(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, r := range []Range{
		{Span: Full, Buckets: 1},
		{Span: Full, Buckets: 16},
		{Span: Full, Buckets: 15625},
		{Span: Full, Buckets: 65536},
		{Span: Span{Lo: 1000, Hi: 1064}, Buckets: 64},
		{Span: Span{Lo: 12345, Hi: 12345 + 7}, Buckets: 3},
		{Span: Span{Lo: Space - 100, Hi: Space}, Buckets: 7},
	} {
		// Every bucket's bounds: its first H is placed in it, the H
		// before it in the bucket before, and the buckets tile the span.
		prev := r.Lo
		for k := range r.Buckets {
			b := r.Bucket(k)
			if b.Lo != prev {
				t.Fatalf("%v bucket %d starts at %d, previous ended at %d", r, k, b.Lo, prev)
			}
			prev = b.Hi
			if b.Lo == b.Hi {
				continue
			}
			if got := place(r, b.Lo); got != k {
				t.Fatalf("%v: H=%d (first of bucket %d) placed in %d", r, b.Lo, k, got)
			}
			if got := place(r, b.Hi-1); got != k {
				t.Fatalf("%v: H=%d (last of bucket %d) placed in %d", r, b.Hi-1, k, got)
			}
		}
		if prev != r.Hi {
			t.Fatalf("%v: buckets end at %d", r, prev)
		}
		// Random keys land in the bucket whose span holds them.
		for range 1000 {
			h := r.Lo + rng.Uint64N(r.Hi-r.Lo)
			k := place(r, h)
			if b := r.Bucket(k); h < b.Lo || h >= b.Hi {
				t.Fatalf("%v: H=%d placed in %d = %v", r, h, k, b)
			}
		}
	}
}

func TestEvenIsTheFixedBucketsOfACluster(t *testing.T) {
	// migctl_cluster's bucket B of N holds H*N div 2^32.
	for _, n := range []int{1, 1024, 3000, 65536} {
		r := Even(n)[0]
		for _, h := range []uint64{0, 1, Space / 3, Space/2 - 1, Space - 1} {
			if got, want := place(r, h), int(h*uint64(n)/Space); got != want {
				t.Fatalf("n=%d H=%d: bucket %d, want %d", n, h, got, want)
			}
		}
	}
}

func TestDiff(t *testing.T) {
	s := func(c, x uint64) Sum { return Sum{Count: c, Sum: x} }
	for _, tc := range []struct {
		name string
		a, b []Sum
		want []int
	}{
		{"equal", []Sum{s(1, 2), s(3, 4)}, []Sum{s(1, 2), s(3, 4)}, nil},
		{"sum differs", []Sum{s(1, 2), s(3, 4)}, []Sum{s(1, 2), s(3, 5)}, []int{1}},
		{"count differs", []Sum{s(1, 2), s(3, 4)}, []Sum{s(2, 2), s(3, 4)}, []int{0}},
		{"max written is not compared", []Sum{{1, 2, 10}}, []Sum{{1, 2, 99}}, nil},
		{"lengths differ", []Sum{s(1, 2)}, []Sum{s(1, 2), s(0, 0)}, []int{1}},
	} {
		if got := Diff(tc.a, tc.b); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Diff = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSpansAndMerge(t *testing.T) {
	rs := []Range{{Span: Span{0, 100}, Buckets: 4}, {Span: Span{200, 210}, Buckets: 2}}
	// Buckets 0 and 1 of the first range join; 3 stands alone; 4 is the
	// second range's first bucket, not adjacent to 3 (a gap 100-200).
	got := Spans(rs, []int{0, 1, 3, 4})
	want := []Span{{0, 50}, {75, 100}, {200, 205}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Spans = %v, want %v", got, want)
	}
	m := Merge([]Span{{0, 10}, {10, 20}, {30, 40}})
	if !reflect.DeepEqual(m, []Range{{Span{0, 20}, 1}, {Span{30, 40}, 1}}) {
		t.Fatalf("Merge = %v", m)
	}
}

func TestBisectionChoices(t *testing.T) {
	same := Sum{Count: 10, Sum: 1}
	other := Sum{Count: 12, Sum: 2}
	rs := []Range{{Span: Span{0, 1000}, Buckets: 4}} // buckets of 250
	for _, tc := range []struct {
		name      string
		rs        []Range
		a, b      []Sum
		listRows  int64
		matched   int64
		rows      int64
		list      []Range
		split     []Range
		nothingTo bool
	}{
		{name: "all agree", rs: rs, a: []Sum{same, same, same, same}, b: []Sum{same, same, same, same},
			listRows: 100, matched: 40, nothingTo: true},
		{name: "few rows: list them", rs: rs, a: []Sum{same, other, other, same}, b: []Sum{same, same, same, same},
			listRows: 100, matched: 20, rows: 24, list: []Range{{Span{250, 750}, 1}}},
		{name: "many rows: split by the factor", rs: rs, a: []Sum{same, other, same, other}, b: []Sum{same, same, same, same},
			listRows: 20, matched: 20, rows: 24,
			split: []Range{{Span{250, 500}, 8}, {Span{750, 1000}, 8}}},
		{name: "a bucket narrower than the factor is cut into single hashes",
			rs: []Range{{Span: Span{0, 6}, Buckets: 2}}, a: []Sum{other, same}, b: []Sum{same, same},
			listRows: 1, matched: 10, rows: 12, split: []Range{{Span{0, 3}, 3}}},
		{name: "single hashes cannot be split: list them even when many",
			rs: []Range{{Span: Span{5, 7}, Buckets: 2}}, a: []Sum{other, other}, b: []Sum{same, same},
			listRows: 1, rows: 24, list: []Range{{Span{5, 7}, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Compare(tc.rs, tc.a, tc.b)
			if r.Matched != tc.matched || r.Rows != tc.rows {
				t.Fatalf("Compare: matched %d rows %d, want %d %d", r.Matched, r.Rows, tc.matched, tc.rows)
			}
			list, split := r.Next(tc.listRows, 8)
			if tc.nothingTo != (list == nil && split == nil) {
				t.Fatalf("Next: list %v split %v", list, split)
			}
			if !reflect.DeepEqual(list, tc.list) || !reflect.DeepEqual(split, tc.split) {
				t.Fatalf("Next: list %v split %v, want %v %v", list, split, tc.list, tc.split)
			}
		})
	}
}

func TestAddIsBucketwise(t *testing.T) {
	s := Sum{Count: 1, Sum: ^uint64(0), MaxWritten: 5}
	s.Add(Sum{Count: 2, Sum: 2, MaxWritten: 3})
	if s != (Sum{Count: 3, Sum: 1, MaxWritten: 5}) {
		t.Fatalf("Add = %+v (the sum wraps mod 2^64)", s)
	}
}
