package consistency

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// Cursor is where an incremental verify stands: the recorder time from
// which changes are still to be verified, and the ids carried over. The
// monitor keeps it in the journal, so a restarted monitor continues.
type Cursor struct {
	// Node is the Mnesia node whose change record the cycles read; Since
	// is in that node's clock (ms). 0: no cycle yet (a full pass first).
	Node  string `json:"node,omitempty"`
	Since int64  `json:"since,omitempty"`
	// Started is the recorder's start time seen at the last cycle: another
	// value means the recorder restarted (a gap in coverage).
	Started int64 `json:"started,omitempty"`
	// Pending are ids to verify again next cycle whatever the record says:
	// those that changed during a cycle, and those reported as different
	// (until they agree again).
	Pending []string `json:"pending,omitempty"`
}

// IncrementalOptions tune an incremental cycle.
type IncrementalOptions struct {
	// MaxChanges: above this many changed keys a cycle gives up in favour
	// of a full pass (Gap says so). Default 200,000.
	MaxChanges int
	// Overlap: a cycle reads the changes from Since − Overlap, so that a
	// node clock stepping back a little cannot hide a change. Default 1 s.
	Overlap time.Duration
	// MaxPending bounds the carried ids; beyond it a full pass is due.
	// Default 100,000.
	MaxPending int
}

func (o IncrementalOptions) withDefaults() IncrementalOptions {
	if o.MaxChanges <= 0 {
		o.MaxChanges = 200000
	}
	if o.Overlap <= 0 {
		o.Overlap = time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 100000
	}
	return o
}

// IncrementalResult is one incremental cycle.
type IncrementalResult struct {
	// Report is the cycle as a check report (Mode "incremental"): Processed
	// counts the keys verified, Differences those reported.
	Report *Report
	// Changed is the number of keys the record listed; Carried the ids
	// left for the next cycle because they changed during this one.
	Changed int
	Carried int
	// Suspects is the number of ids whose digests (or last_accessed) the
	// two sides did not agree on at first look, and which were therefore
	// read as sessions and judged by the rule. On quiet stores it is the
	// differences; a digest computed otherwise on one side would make it
	// every changed key.
	Suspects int
	// Gap, when not empty, says why the record does not cover the time
	// since the last cycle (recorder restarted, window pruned, table
	// cleared, too many changes, first cycle): nothing was verified, and a
	// full pass is needed. Report is nil then.
	Gap string
	// Next is the cursor for the next cycle (the same cursor on a gap).
	Next Cursor
}

// ErrNoChangeRecord is returned when neither store is Mnesia: the change
// record exists for Mnesia tables only.
var ErrNoChangeRecord = errors.New("consistency: incremental verify needs a Mnesia side (its change record)")

// recordSide returns the Mnesia side (the one with the change record) and
// the other one.
func recordSide(source, target backends.Store) (rec backends.Store, other backends.Store, recIsTarget bool, err error) {
	isM := func(s backends.Store) bool {
		_, u := s.(*backends.Union)
		return !u && s.Spec().Kind == backends.KindMnesia
	}
	switch {
	case isM(target):
		return target, source, true, nil
	case isM(source):
		return source, target, false, nil
	}
	return nil, nil, false, ErrNoChangeRecord
}

// MarkCursor reads the change record's clock before a full pass: the
// cycles after the pass verify what changed from then on.
func MarkCursor(ctx context.Context, source, target backends.Store, o Options) (Cursor, error) {
	if o.Client == nil {
		return Cursor{}, ErrNoClient
	}
	rec, _, _, err := recordSide(source, target)
	if err != nil {
		return Cursor{}, err
	}
	var wire, trips atomic.Int64
	s := newSide(o.Client, rec, &wire, &trips, o.Pace)
	var now int64
	var cov agentapi.Coverage
	err = s.paced(ctx, "mark", func(st agentapi.Store) (n int64, err error) {
		now, cov, err = agentapi.Incr{C: s.c}.Mark(ctx, s.node, st)
		return 0, err
	})
	if err != nil {
		return Cursor{}, err
	}
	if !cov.Running {
		return Cursor{}, fmt.Errorf("consistency: no change recorder runs on %s", s.node)
	}
	return Cursor{Node: s.node, Since: now, Started: cov.Started}, nil
}

// coverageGap says why the record (coverage c, read on node) does not
// cover [from, now), "" when it does.
func coverageGap(c agentapi.Coverage, cur Cursor, from int64, node string) string {
	switch {
	case cur.Since == 0:
		return "no previous cycle"
	case cur.Node != node:
		return fmt.Sprintf("the change record is read on %s now, on %s before", node, cur.Node)
	case !c.Running:
		return "no change recorder runs on " + node
	case !c.Subscribed:
		return "the change recorder is not subscribed to the table (Mnesia restarting?)"
	case cur.Started != 0 && c.Started != cur.Started:
		return "the change recorder restarted since the last cycle"
	case c.Since > cur.Since:
		return fmt.Sprintf("the change record starts at %s, after the last cycle (%s): recorder resubscribed or window pruned",
			time.UnixMilli(c.Since).UTC().Format(time.RFC3339Nano), time.UnixMilli(cur.Since).UTC().Format(time.RFC3339Nano))
	case c.Cleared >= from:
		return "the table was cleared since the last cycle"
	}
	return ""
}

// Incremental runs one incremental cycle: it verifies the sessions whose
// keys the Mnesia side's change record (migctl_recorder) lists as changed
// since cur.Since, plus cur.Pending, and nothing else. Its cost grows with
// the changes, not with the stores.
//
// The comparison is the full check's: both sides' digests (the node-side
// digest of migctl_check) and last_accessed within the tolerance agree;
// the others are read as sessions and judged by the same code as Check
// (Rule, rechecks after o.RecheckDelay). What still differs and changed
// during the cycle (the record shows a change at or after the cycle's
// start) is carried to the next cycle instead of being reported: it is a
// write in flight, and will be verified once it has settled. Only what
// differs and did not change is reported.
//
// When the record does not cover the whole time since cur (first cycle,
// recorder restarted, window pruned, table cleared, too many changes),
// the result has Gap set and nothing is verified: run a full check (after
// MarkCursor) instead. Changes that bypass Mnesia (a write to the DETS or
// ETS side only) are not in the record: the full pass on its slower
// schedule covers them.
func Incremental(ctx context.Context, source, target backends.Store, cur Cursor, opts Options, inc IncrementalOptions) (*IncrementalResult, error) {
	if opts.Client == nil {
		return nil, ErrNoClient
	}
	o := quiet(opts).withDefaults()
	inc = inc.withDefaults()
	rec, _, recIsTarget, err := recordSide(source, target)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for _, n := range append(backends.NodesOf(source), backends.NodesOf(target)...) {
		if err := o.Client.Connect(ctx, n); err != nil {
			return nil, err
		}
	}
	var wire, trips atomic.Int64
	src := newSide(o.Client, source, &wire, &trips, o.Pace)
	tgt := newSide(o.Client, target, &wire, &trips, o.Pace)
	rs, oside := tgt, src
	if !recIsTarget {
		rs, oside = src, tgt
	}
	res := &IncrementalResult{Next: cur}
	if len(cur.Pending) > inc.MaxPending {
		res.Gap = fmt.Sprintf("%d ids carried over, more than %d", len(cur.Pending), inc.MaxPending)
		return res, nil
	}

	// 1. The changed keys and the carried ids, with the record side's
	// digests of them: one call.
	from := cur.Since - inc.Overlap.Milliseconds()
	t0 := time.Now()
	var ch *agentapi.Changes
	err = rs.paced(ctx, "changes", func(st agentapi.Store) (n int64, err error) {
		ch, n, err = agentapi.Incr{C: rs.c}.Changes(ctx, rs.node, st, from, inc.MaxChanges, cur.Pending)
		return n, err
	})
	if err != nil {
		return nil, err
	}
	if ch.TooMany {
		res.Gap = fmt.Sprintf("%d keys changed since the last cycle, more than %d", ch.Count, inc.MaxChanges)
		return res, nil
	}
	now, cov := ch.Now, ch.Coverage
	if g := coverageGap(cov, cur, from, rec.Node()); g != "" {
		res.Gap = g
		return res, nil
	}
	// The record's keys and the carried ids, each once (the node lists a
	// carried id the record has too only once).
	res.Changed = ch.Count
	recRows := make(map[string]digestRow, len(ch.Present))
	ids := make([]string, 0, len(ch.Present)+len(ch.Absent))
	for id, d := range ch.Present {
		recRows[id] = digestRow(d)
		ids = append(ids, id)
	}
	ids = append(ids, ch.Absent...)
	sort.Strings(ids)

	// 2. The other side's digests of the same ids.
	otherRows, err := oside.digestsAt(ctx, ids)
	if err != nil {
		return nil, err
	}
	rep := &Report{Source: src.name(), Target: tgt.name(), Mode: "incremental", StartedAt: o.Now().UTC(), Samples: map[Kind][]Difference{}}
	rep.Rounds = 1
	rep.Phases.Listing = time.Since(t0)

	// 3. The full check's comparison: the listed rows, then the suspects
	// judged as sessions, then rechecked.
	l := listing{src: recRows, tgt: otherRows}
	if recIsTarget {
		l = listing{src: otherRows, tgt: recRows}
	}
	t1 := time.Now()
	tol := o.Rule.toleranceMs()
	var suspects []string
	for _, id := range ids {
		rep.Processed++
		a, okA := l.src[id]
		b, okB := l.tgt[id]
		if !okA && !okB {
			continue // deleted on both sides: agree
		}
		if okA && okB && a.Digest == b.Digest && (tol == 0 || absDiff(a.LastAccessed, b.LastAccessed) <= tol) {
			continue
		}
		suspects = append(suspects, id)
	}
	res.Suspects = len(suspects)
	diffs, err := judgeAll(ctx, src, tgt, suspects, o, rep)
	rep.Phases.Compare = time.Since(t1)
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	diffs, unsettled, err := recheck(ctx, src, tgt, diffs, o, rep)
	if err != nil {
		return nil, err
	}
	// Sessions still being written at every recheck are writes in flight
	// like the others: carried below when the record shows them changed
	// during the cycle.
	diffs = append(diffs, unsettled...)

	// 4. What still differs and changed during the cycle waits for the
	// next one; the rest is reported (and verified again next cycle until
	// it agrees).
	var pending []string
	if len(diffs) > 0 {
		still := make([]string, 0, len(diffs))
		for _, d := range diffs {
			still = append(still, d.ID)
		}
		at, err := rs.changedAt(ctx, still)
		if err != nil {
			return nil, err
		}
		kept := diffs[:0]
		for _, d := range diffs {
			if at[d.ID] >= now {
				pending = append(pending, d.ID)
				res.Carried++
				continue
			}
			kept = append(kept, d)
			pending = append(pending, d.ID)
		}
		diffs = kept
	}
	rep.Phases.Recheck = time.Since(t2)
	rep.record(diffs, o.MaxSamples)
	// Carried ids count neither as matching nor as different.
	rep.Processed -= int64(res.Carried)
	rep.Matching = rep.Processed - rep.Mismatched - rep.MissingInTarget - rep.ExtraInTarget - rep.Expired
	rep.BytesMoved, rep.RoundTrips = wire.Load(), trips.Load()
	rep.Duration = time.Since(start)
	res.Report = rep
	res.Next = Cursor{Node: rec.Node(), Since: now, Started: cov.Started, Pending: pending}
	return res, nil
}

// paced runs one migctl_incr call of the side (through the typed stub,
// given the side's store): the monitor's pace first, then the call,
// counted as a round trip with the bytes it moved, as call1 counts those
// of migctl_check.
func (s *side) paced(ctx context.Context, fun string, call func(agentapi.Store) (int64, error)) error {
	if s.pace != nil {
		if err := s.pace(ctx); err != nil {
			return err
		}
	}
	s.trips.Add(1)
	wire, err := call(agentStore(s.store))
	s.wire.Add(wire)
	s.calls.add(fun, wire)
	if err != nil {
		return fmt.Errorf("%s on %s: %w", fun, s.name(), err)
	}
	return nil
}

// agentStore names a store for the agent stubs.
func agentStore(s backends.Store) agentapi.Store {
	sp := s.Spec()
	return agentapi.Store{Kind: string(sp.Kind), Table: sp.Table, File: sp.File, Create: sp.Create}
}

// digestsAt asks the side for the digests of ids (migctl_incr:digests_at);
// a union asks every member at once and takes the one that holds the
// session (a session lives on one member).
func (s *side) digestsAt(ctx context.Context, ids []string) (map[string]digestRow, error) {
	out := make(map[string]digestRow, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	parts := s.parts
	if len(parts) == 0 {
		parts = []*side{s}
	}
	const batch = 20000
	for i := 0; i < len(ids); i += batch {
		chunk := ids[i:min(i+batch, len(ids))]
		replies := make([]map[string]agentapi.Digest, len(parts))
		errs := make([]error, len(parts))
		var wg sync.WaitGroup
		for j, p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = p.paced(ctx, "digests_at", func(st agentapi.Store) (n int64, err error) {
					replies[j], n, err = agentapi.Incr{C: p.c}.DigestsAt(ctx, p.node, st, chunk)
					return n, err
				})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for _, m := range replies {
			for id, d := range m {
				out[id] = digestRow(d)
			}
		}
	}
	return out, nil
}

// changedAt returns when each id last changed in the record (0: never).
func (s *side) changedAt(ctx context.Context, ids []string) (map[string]int64, error) {
	var out map[string]int64
	err := s.paced(ctx, "changed_at", func(st agentapi.Store) (n int64, err error) {
		out, n, err = agentapi.Incr{C: s.c}.ChangedAt(ctx, s.node, st, ids)
		return n, err
	})
	return out, err
}

// NativeIncremental runs the native reference of a cycle on the Mnesia
// side's node: migctl_incr:native, the changed keys since `since` and both
// sides' digests of them, compared in Erlang. It returns the changed and
// differing key counts and the node's own time.
func NativeIncremental(ctx context.Context, c *erl.Client, source, target backends.Store, since int64) (changed, differ int, d time.Duration, err error) {
	rec, other, _, err := recordSide(source, target)
	if err != nil {
		return 0, 0, 0, err
	}
	if _, ok := other.(*backends.Union); ok {
		return 0, 0, 0, errors.New("native incremental: the other side must be one store")
	}
	changed, differ, d, err = agentapi.Incr{C: c}.Native(ctx, rec.Node(), agentStore(rec), other.Node(), agentStore(other), since)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("native incremental on %s: %w", rec.Node(), err)
	}
	return changed, differ, d, nil
}
