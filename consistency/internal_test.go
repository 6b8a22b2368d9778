package consistency

import (
	"testing"

	"github.com/erlmcp/migctl/backends"
)

func TestThrottle(t *testing.T) {
	busy, why := throttle([]nodeLoad{{Node: "a@h", RunQueue: 3, Schedulers: 2}, {Node: "b@h", RunQueue: 9, Schedulers: 2}}, 4)
	if !busy || why == "" {
		t.Fatalf("want busy with a reason, got %v %q", busy, why)
	}
	if busy, _ := throttle([]nodeLoad{{Node: "a@h", RunQueue: 8, Schedulers: 2}}, 4); busy {
		t.Fatal("8 waiting on 2 schedulers is within a limit of 4 each")
	}
	if busy, _ := throttle(nil, 4); busy {
		t.Fatal("no loads: not busy")
	}
}

func TestSampleRangesCoverTheRightShare(t *testing.T) {
	rs := sampleRanges(1000000, 10000, 7)
	var covered uint64
	var prev uint64
	for _, r := range rs {
		if r.Lo < prev {
			t.Fatal("ranges overlap or are unsorted")
		}
		covered += r.Hi - r.Lo
		prev = r.Hi
	}
	frac := float64(covered) / float64(uint64(1)<<32)
	if frac < 0.0095 || frac > 0.0105 {
		t.Fatalf("sample covers %.4f of the space, want 0.01", frac)
	}
	if len(sampleRanges(100, 1000, 1)) != 1 {
		t.Fatal("a sample larger than the store is the whole store")
	}
}

func TestPlan(t *testing.T) {
	rep := &Report{Differences: []Difference{
		{Kind: KindMissingInTarget, ID: "a", Newer: "source"},
		{Kind: KindExtraInTarget, ID: "b", Newer: "target"},
		{Kind: KindMismatched, ID: "c", Newer: "target"},
		{Kind: KindMismatched, ID: "d", Newer: "source"},
		{Kind: KindMismatched, ID: "e"},
	}}
	want := map[string]Action{
		"a": {Op: CopyToTarget, Mode: backends.IfAbsent},
		"b": {Op: CopyToSource, Mode: backends.IfAbsent},
		"c": {Op: CopyToSource, Mode: backends.IfNewer},
		"d": {Op: CopyToTarget, Mode: backends.IfNewer},
		"e": {Op: CopyToTarget, Mode: backends.Overwrite},
	}
	for _, a := range Plan(rep, false) {
		if w := want[a.ID]; w.Op != a.Op || w.Mode != a.Mode {
			t.Errorf("%s: %s/%s, want %s/%s", a.ID, a.Op, a.Mode, w.Op, w.Mode)
		}
	}
	for _, a := range Plan(rep, true) {
		if a.ID == "b" && a.Op != DeleteFromTarget {
			t.Errorf("--delete-extra: b is %s", a.Op)
		}
	}
}
