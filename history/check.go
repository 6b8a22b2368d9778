package history

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Window is one split: from just before the cut to the end of the heal.
type Window struct {
	Start, End time.Time
}

// Options steer Check.
type Options struct {
	// Splits are the split windows; operations inside them are reported,
	// not judged, and each heal is judged by its rule (see the package
	// doc).
	Splits []Window
	// InitialAny says keys may hold values the history does not know
	// before their first operation (sessions that existed before the run);
	// by default every key starts absent.
	InitialAny bool
	// KeyTimeout bounds porcupine's search for one key (default 10 s); a
	// key it cannot decide in time is reported as Unknown.
	KeyTimeout time.Duration
	// VisualizeDir, when set, receives porcupine's HTML visualization of
	// every failed key (<key>.html).
	VisualizeDir string
	// MaxVisualizations caps the files written (default 10).
	MaxVisualizations int
}

// Result is Check's verdict.
type Result struct {
	Ops    int // operations in the history
	Keys   int // distinct keys
	Judged int // operations judged by porcupine (a write judged in several segments counts once per segment)
	// FailedReads are fetches that failed: they tell nothing and are left out.
	FailedReads int
	// MaybeWrites are stores and deletes that failed: they may have happened.
	MaybeWrites int
	Splits      []SplitReport
	// HealKeys counts, over all heals, the keys whose value after the heal
	// was judged against the heal rule's candidates (a read after it).
	HealKeys int
	Failures []Failure
	Unknown  []string // keys porcupine could not decide in time
	Start    int64    // the earliest call, ns
}

// SplitReport is what happened inside one split window: reported, not
// judged.
type SplitReport struct {
	Window
	Ops         int // operations that overlap the window
	Reads       int // reads inside it (not judged)
	KeysWritten int // keys written (acknowledged) during it
	Deletes     int // acknowledged deletes during it
	HealKeys    int // keys judged against this heal's candidates
	// HealExact counts those of HealKeys for which the rule left exactly
	// one value: how sharp the heal's judgement was.
	HealExact int
	// KeptByTouch counts keys whose value after the heal is older than an
	// acknowledged write, kept because a fetch on the other side touched
	// it later (erlmcp's fetch rewrites last_accessed, a change the rule
	// counts): what the rule lets clients see, not a failure.
	KeptByTouch int
}

// Failure is one key whose history the model does not explain.
type Failure struct {
	Key string
	// Segment 0 is before the first split, i after the i-th heal.
	Segment int
	// Initial are the values the key could hold when the segment began
	// (after a heal: the heal rule's candidates).
	Initial   []string
	Diagnosis string
	Ops       []Op // the key's operations in call order (the whole history)
	// Visualization is the path of porcupine's HTML file, if written.
	Visualization string
}

// OK says whether every key was found linearizable (and every heal kept its
// rule) and none was left undecided.
func (r *Result) OK() bool { return len(r.Failures) == 0 && len(r.Unknown) == 0 }

// Summary is the one line a run's report prints.
func (r *Result) Summary() string {
	if r.OK() {
		s := fmt.Sprintf("history: %d operations on %d keys, linearizable per key", r.Ops, r.Keys)
		if len(r.Splits) > 0 {
			s += fmt.Sprintf(" outside the split; heal rule held for %d keys", r.HealKeys)
		}
		return s
	}
	return fmt.Sprintf("history: %d operations on %d keys, NOT linearizable: %d keys failed, %d undecided",
		r.Ops, r.Keys, len(r.Failures), len(r.Unknown))
}

// absent is the register's value for "no session".
const absent int64 = -1

// anyValue is the state of a key that may hold anything (InitialAny).
const anyValue = "*"

type input struct {
	kind Kind
	val  int64 // written by a store (digest) or a delete (absent)
}

type opMeta struct {
	op Op
}

func valueOf(op Op) int64 {
	if op.Kind == Delete || op.Outcome == NotFound {
		return absent
	}
	return int64(op.Digest)
}

func valueText(v int64) string {
	if v == absent {
		return "absent"
	}
	return fmt.Sprintf("%08x", v)
}

// A state is a set of values the register may hold, as text: one value, a
// sorted comma-separated set, or anyValue. Text keeps porcupine's default
// equality (==) and its caching.
func stateOf(vals []int64) string {
	if len(vals) == 1 {
		return strconv.FormatInt(vals[0], 10)
	}
	s := append([]int64(nil), vals...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	parts := make([]string, 0, len(s))
	for i, v := range s {
		if i > 0 && v == s[i-1] {
			continue
		}
		parts = append(parts, strconv.FormatInt(v, 10))
	}
	return strings.Join(parts, ",")
}

func stateHas(state string, v int64) bool {
	if state == anyValue {
		return true
	}
	want := strconv.FormatInt(v, 10)
	for _, p := range strings.Split(state, ",") {
		if p == want {
			return true
		}
	}
	return false
}

func describeState(state string) string {
	if state == anyValue {
		return "any"
	}
	var out []string
	for _, p := range strings.Split(state, ",") {
		v, _ := strconv.ParseInt(p, 10, 64)
		out = append(out, valueText(v))
	}
	if len(out) == 1 {
		return out[0]
	}
	return "one of {" + strings.Join(out, ", ") + "}"
}

// registerModel is a register whose state is the set of values it may
// hold; a read narrows the set to what it saw.
func registerModel(init string) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return init },
		Step: func(state, in, out any) (bool, any) {
			i := in.(input)
			if i.kind != Fetch {
				return true, strconv.FormatInt(i.val, 10)
			}
			v := out.(int64)
			if stateHas(state.(string), v) {
				return true, strconv.FormatInt(v, 10)
			}
			return false, state
		},
		DescribeOperation: func(in, out any) string {
			i := in.(input)
			switch i.kind {
			case Fetch:
				return "fetch -> " + valueText(out.(int64))
			case Delete:
				return "delete"
			}
			return "store " + valueText(i.val)
		},
		DescribeState: func(state any) string { return describeState(state.(string)) },
		DescribeOperationMetadata: func(m any) string {
			if mm, ok := m.(opMeta); ok {
				return fmt.Sprintf("%s worker %d, %s", mm.op.Node, mm.op.Client, mm.op.Outcome)
			}
			return ""
		},
	}
}

// segment is one stretch of a key's history judged as linearizable.
type segment struct {
	lo, hi int64 // (lo, hi): after the previous heal, before the next cut
}

// Check judges a history; see the package doc for the rules.
func Check(ctx context.Context, h *History, opts Options) (*Result, error) {
	if opts.KeyTimeout <= 0 {
		opts.KeyTimeout = 10 * time.Second
	}
	if opts.MaxVisualizations <= 0 {
		opts.MaxVisualizations = 10
	}
	res := &Result{Ops: len(h.Ops)}
	var end int64 = math.MinInt64
	res.Start = math.MaxInt64
	byKey := map[string][]Op{}
	for _, op := range h.Ops {
		byKey[op.Key] = append(byKey[op.Key], op)
		end = max(end, op.Return)
		res.Start = min(res.Start, op.Call)
		switch {
		case op.Kind == Fetch && op.Outcome.Failed():
			res.FailedReads++
		case op.Kind != Fetch && op.Outcome.Failed():
			res.MaybeWrites++
		}
	}
	if len(h.Ops) == 0 {
		res.Start = 0
	}
	res.Keys = len(byKey)
	// "Never returned": after every real return, so porcupine may place
	// the operation anywhere after its call.
	inf := end + 1

	wins := append([]Window(nil), opts.Splits...)
	sort.Slice(wins, func(i, j int) bool { return wins[i].Start.Before(wins[j].Start) })
	segs := []segment{{lo: math.MinInt64, hi: math.MaxInt64}}
	for i, w := range wins {
		if !w.End.After(w.Start) {
			return nil, fmt.Errorf("history: split window %d ends before it starts", i)
		}
		if i > 0 && w.Start.Before(wins[i-1].End) {
			return nil, fmt.Errorf("history: split windows %d and %d overlap", i-1, i)
		}
		segs[len(segs)-1].hi = w.Start.UnixNano()
		segs = append(segs, segment{lo: w.End.UnixNano(), hi: math.MaxInt64})
		res.Splits = append(res.Splits, splitReport(w, h.Ops))
	}

	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	visualized := 0
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ops := byKey[key]
		sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
		for si, sg := range segs {
			var init string
			switch {
			case si > 0:
				init = stateOf(candidates(ops, sg.lo, true))
			case opts.InitialAny:
				init = anyValue
			default:
				init = stateOf([]int64{absent})
			}
			pops, reads := segmentOps(ops, sg, inf)
			if reads == 0 {
				continue // writes alone are always linearizable
			}
			res.Judged += len(pops)
			if si > 0 {
				res.HealKeys++
				res.Splits[si-1].HealKeys++
				if !strings.Contains(init, ",") {
					res.Splits[si-1].HealExact++
				}
				if keptByTouch(ops, sg) {
					res.Splits[si-1].KeptByTouch++
				}
			}
			model := registerModel(init)
			verdict, info := porcupine.CheckOperationsVerbose(model, pops, opts.KeyTimeout)
			switch verdict {
			case porcupine.Ok:
				continue
			case porcupine.Unknown:
				res.Unknown = append(res.Unknown, key)
				continue
			}
			f := Failure{Key: key, Segment: si, Initial: strings.Split(describeStateList(init), ", "), Ops: ops}
			f.Diagnosis = diagnose(ops, sg, init)
			if opts.VisualizeDir != "" && visualized < opts.MaxVisualizations {
				p := filepath.Join(opts.VisualizeDir, fmt.Sprintf("%s.seg%d.html", safeName(key), si))
				if err := os.MkdirAll(opts.VisualizeDir, 0o755); err == nil {
					if err := porcupine.VisualizePath(model, info, p); err == nil {
						f.Visualization = p
						visualized++
					}
				}
			}
			res.Failures = append(res.Failures, f)
		}
	}
	return res, nil
}

func describeStateList(state string) string {
	s := describeState(state)
	s = strings.TrimPrefix(s, "one of {")
	return strings.TrimSuffix(s, "}")
}

// segmentOps are the porcupine operations of one segment of a key (ops in
// call order) and how many of them are reads.
func segmentOps(ops []Op, sg segment, inf int64) ([]porcupine.Operation, int) {
	var out []porcupine.Operation
	clients := map[string]int{}
	reads := 0
	for _, op := range ops {
		call, ret := op.Call, op.Return
		switch {
		case op.Kind == Fetch && op.Outcome.Failed():
			continue
		case op.Kind == Fetch:
			// A read counts only wholly inside the segment: one that
			// overlaps a split may have seen one side's value.
			if call < sg.lo || ret >= sg.hi {
				continue
			}
			reads++
		case op.Outcome.Failed():
			// May have happened, at any time after its call (also in a
			// later segment).
			if call >= sg.hi {
				continue
			}
			call, ret = max(call, sg.lo), inf
		default:
			// An acknowledged write called before the cut belongs here
			// even if it returned after it (it may have taken effect
			// before a read of this segment); one that was in flight at
			// the heal's end may take effect after it.
			if call >= sg.hi || ret <= sg.lo {
				continue
			}
			call = max(call, sg.lo)
		}
		cid := op.Node + "/" + strconv.Itoa(op.Client)
		id, ok := clients[cid]
		if !ok {
			id = len(clients)
			clients[cid] = id
		}
		var out0 any
		if op.Kind == Fetch {
			out0 = valueOf(op)
		}
		out = append(out, porcupine.Operation{ClientId: id, Input: input{kind: op.Kind, val: valueOf(op)},
			Call: call, Output: out0, Return: ret, Metadata: opMeta{op: op}})
	}
	return out, reads
}

// candidates are the values the heal rule may leave a key with at the end
// of a heal (time at): every change called before then, acknowledged or
// maybe, unless an acknowledged change that returned before the heal
// ended was called after it returned (that one is definitely the later
// change), and "absent" from before the first change unless such a change
// came since. With touches, a fetch
// that found the session is a change that rewrote the value it read:
// erlmcp's backends update last_accessed in the same transaction, and the
// heal's rule counts that write like any other.
func candidates(ops []Op, at int64, touches bool) []int64 {
	change := func(op Op) bool {
		return op.Kind != Fetch || (touches && op.Outcome == OK)
	}
	// Only a change that returned before the heal ended certainly took
	// effect by then; one still in flight may land after it (the segment
	// after the heal has it as a write of its own).
	var lastAckedCall int64 = math.MinInt64
	for _, op := range ops {
		if change(op) && op.Outcome == OK && op.Return < at {
			lastAckedCall = max(lastAckedCall, op.Call)
		}
	}
	var out []int64
	if lastAckedCall == math.MinInt64 {
		out = append(out, absent) // the initial state
	}
	for _, op := range ops {
		if !change(op) || op.Call >= at {
			continue
		}
		if op.Outcome == OK && op.Return < lastAckedCall {
			continue
		}
		out = append(out, valueOf(op))
	}
	return out
}

// keptByTouch says whether the value a key showed first after a heal (its
// first read before any acknowledged write of the segment) is one only a
// fetch's touch made the later change: the rule then kept an older value
// over an acknowledged write of the other side.
func keptByTouch(ops []Op, sg segment) bool {
	firstWrite := int64(math.MaxInt64)
	for _, op := range ops {
		if op.Kind != Fetch && op.Outcome == OK && op.Call >= sg.lo {
			firstWrite = min(firstWrite, op.Call)
		}
	}
	for _, r := range ops {
		if r.Kind != Fetch || r.Outcome.Failed() || r.Call < sg.lo || r.Return >= sg.hi || r.Return >= firstWrite {
			continue
		}
		v := valueOf(r)
		return !slices.Contains(candidates(ops, sg.lo, false), v) && slices.Contains(candidates(ops, sg.lo, true), v)
	}
	return false
}

// diagnose names what is wrong in a failed segment: the first read (by
// return) that no plausible value explains, or, if every read has some
// plausible value, that no single order explains them together.
func diagnose(ops []Op, sg segment, init string) string {
	written := map[int64]bool{absent: true}
	for _, op := range ops {
		if op.Kind == Store {
			written[int64(op.Digest)] = true
		}
	}
	reads := make([]Op, 0)
	for _, op := range ops {
		if op.Kind == Fetch && !op.Outcome.Failed() && op.Call >= sg.lo && op.Return < sg.hi {
			reads = append(reads, op)
		}
	}
	sort.SliceStable(reads, func(i, j int) bool { return reads[i].Return < reads[j].Return })
	for _, r := range reads {
		v := valueOf(r)
		if plausible(ops, sg, init, r, v) {
			continue
		}
		switch {
		case !written[v]:
			return fmt.Sprintf("a value nobody wrote: %s read %s, which no client stored under this key", r, valueText(v))
		case v == absent:
			return fmt.Sprintf("lost write: %s read absent although an acknowledged store came after every delete", r)
		}
		if w, ok := supersededBy(ops, r, v); ok && w.Kind == Delete {
			return fmt.Sprintf("resurrected delete: %s read %s after %s had completed", r, valueText(v), w)
		}
		return fmt.Sprintf("stale read: %s read %s, which a later acknowledged write had replaced", r, valueText(v))
	}
	return "no single order of the operations explains the reads together (see the visualization)"
}

// plausible says whether read r may return v on its own: some write of v
// (or the segment's initial state) is not definitely replaced before r was
// called.
func plausible(ops []Op, sg segment, init string, r Op, v int64) bool {
	// The latest call of an acknowledged write of this segment that
	// returned before r was called: anything that returned before that
	// call is definitely replaced.
	var cut int64 = math.MinInt64
	for _, w := range ops {
		if w.Kind != Fetch && w.Outcome == OK && w.Return < r.Call && w.Call >= sg.lo {
			cut = max(cut, w.Call)
		}
	}
	if cut == math.MinInt64 && stateHas(init, v) {
		return true
	}
	for _, w := range ops {
		if w.Kind == Fetch || valueOf(w) != v || w.Call > r.Return || w.Call >= sg.hi {
			continue
		}
		if w.Outcome == OK && w.Return <= sg.lo {
			continue // before the heal: it is in init if the rule allows it
		}
		if w.Outcome.Failed() || w.Return >= cut {
			return true
		}
	}
	return false
}

// supersededBy finds the acknowledged write that definitely replaced every
// write of v before r: the last one to be called of those that returned
// before r was called (also before a heal: the change the heal should have
// kept).
func supersededBy(ops []Op, r Op, v int64) (Op, bool) {
	var best Op
	found := false
	for _, w := range ops {
		if w.Kind != Fetch && w.Outcome == OK && w.Return < r.Call && valueOf(w) != v {
			if !found || w.Call > best.Call {
				best, found = w, true
			}
		}
	}
	return best, found
}

func splitReport(w Window, ops []Op) SplitReport {
	s, e := w.Start.UnixNano(), w.End.UnixNano()
	sr := SplitReport{Window: w}
	keys := map[string]bool{}
	for _, op := range ops {
		if op.Call > e || op.Return < s {
			continue
		}
		sr.Ops++
		switch {
		case op.Kind == Fetch:
			sr.Reads++
		case op.Outcome == OK && op.Call >= s:
			keys[op.Key] = true
			if op.Kind == Delete {
				sr.Deletes++
			}
		}
	}
	sr.KeysWritten = len(keys)
	return sr
}
