package consistency

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
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
	t, err := s.incr(ctx, "mark", 0, s.term)
	if err != nil {
		return Cursor{}, err
	}
	cov := parseCoverage(t[2])
	if !cov.running {
		return Cursor{}, fmt.Errorf("consistency: no change recorder runs on %s", s.node)
	}
	return Cursor{Node: s.node, Since: erl.Int64(t[1]), Started: cov.started}, nil
}

type coverage struct {
	running       bool
	started       int64
	since         int64 // -1: not subscribed
	cleared       int64
	subscribedNow bool
}

func parseCoverage(t etf.Term) coverage {
	tt, ok := t.(etf.Tuple)
	if !ok || len(tt) != 4 || tt[0] != etf.Atom("coverage") {
		return coverage{}
	}
	c := coverage{running: true, started: erl.Int64(tt[1]), cleared: erl.Int64(tt[3]), since: -1}
	if tt[2] != etf.Atom("undefined") {
		c.since, c.subscribedNow = erl.Int64(tt[2]), true
	}
	return c
}

// gap says why the record does not cover [from, now), "" when it does.
func (c coverage) gap(cur Cursor, from int64, node string) string {
	switch {
	case cur.Since == 0:
		return "no previous cycle"
	case cur.Node != node:
		return fmt.Sprintf("the change record is read on %s now, on %s before", node, cur.Node)
	case !c.running:
		return "no change recorder runs on " + node
	case !c.subscribedNow:
		return "the change recorder is not subscribed to the table (Mnesia restarting?)"
	case cur.Started != 0 && c.started != cur.Started:
		return "the change recorder restarted since the last cycle"
	case c.since > cur.Since:
		return fmt.Sprintf("the change record starts at %s, after the last cycle (%s): recorder resubscribed or window pruned",
			time.UnixMilli(c.since).UTC().Format(time.RFC3339Nano), time.UnixMilli(cur.Since).UTC().Format(time.RFC3339Nano))
	case c.cleared >= from:
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
	o := opts.withDefaults()
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
	copts := etf.List{etf.Tuple{etf.Atom("max_keys"), inc.MaxChanges}}
	sent := 0
	if len(cur.Pending) > 0 {
		z := zip(encodeIDs16(cur.Pending))
		copts, sent = append(copts, etf.Tuple{etf.Atom("pending"), z}), len(z)
	}
	t, err := rs.incr(ctx, "changes", sent, rs.term, from, copts)
	if err != nil {
		return nil, err
	}
	if len(t) == 5 && t[1] == etf.Atom("too_many") {
		res.Gap = fmt.Sprintf("%d keys changed since the last cycle, more than %d", erl.Int64(t[2]), inc.MaxChanges)
		return res, nil
	}
	if len(t) != 6 {
		return nil, fmt.Errorf("changes on %s: unexpected reply", rs.name())
	}
	now, cov := erl.Int64(t[4]), parseCoverage(t[5])
	if g := cov.gap(cur, from, rec.Node()); g != "" {
		res.Gap = g
		return res, nil
	}
	pb, err1 := unzip(erl.Bytes(t[1]))
	ab, err2 := unzip(erl.Bytes(t[2]))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("changes on %s: %w", rs.name(), err)
	}
	recRows, err := parsePresent(pb)
	if err != nil {
		return nil, fmt.Errorf("changes on %s: %w", rs.name(), err)
	}
	absent, err := parseIDs16(ab)
	if err != nil {
		return nil, fmt.Errorf("changes on %s: %w", rs.name(), err)
	}
	// The record's keys and the carried ids, each once (the node lists a
	// carried id the record has too only once).
	res.Changed = int(erl.Int64(t[3]))
	ids := make([]string, 0, len(recRows)+len(absent))
	for id := range recRows {
		ids = append(ids, id)
	}
	ids = append(ids, absent...)
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
	for round := 0; round < o.Rechecks && len(diffs) > 0; round++ {
		if round == 0 {
			rep.Rechecked = int64(len(diffs))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(o.RecheckDelay):
		}
		again := make([]string, 0, len(diffs))
		for _, d := range diffs {
			again = append(again, d.ID)
		}
		if diffs, err = judgeAll(ctx, src, tgt, again, o, rep); err != nil {
			return nil, err
		}
	}

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
	for _, d := range diffs {
		switch d.Kind {
		case KindMismatched:
			rep.Mismatched++
		case KindMissingInTarget:
			rep.MissingInTarget++
		case KindExtraInTarget:
			rep.ExtraInTarget++
		}
		if len(rep.Samples[d.Kind]) < o.MaxSamples {
			rep.Samples[d.Kind] = append(rep.Samples[d.Kind], d)
		}
	}
	rep.Differences = diffs
	// Carried ids count neither as matching nor as different.
	rep.Processed -= int64(res.Carried)
	rep.Matching = rep.Processed - rep.Mismatched - rep.MissingInTarget - rep.ExtraInTarget - rep.Expired
	rep.BytesMoved, rep.RoundTrips = wire.Load(), trips.Load()
	rep.Duration = time.Since(start)
	res.Report = rep
	res.Next = Cursor{Node: rec.Node(), Since: now, Started: cov.started, Pending: pending}
	return res, nil
}

// incr calls migctl_incr:fun on the side's node, counting the wire as
// call1 does for migctl_check.
func (s *side) incr(ctx context.Context, fun string, sent int, args ...erl.Term) (etf.Tuple, error) {
	if s.pace != nil {
		if err := s.pace(ctx); err != nil {
			return nil, err
		}
	}
	s.trips.Add(1)
	s.wire.Add(int64(sent))
	t, err := s.c.Agent(ctx, s.node, "migctl_incr:"+fun, args...)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", fun, s.name(), err)
	}
	for _, x := range t[1:] {
		if b, ok := x.([]byte); ok {
			s.wire.Add(int64(len(b)))
		}
	}
	return t, nil
}

// digestsAt asks the side for the digests of ids (migctl_incr:digests_at,
// positional replies); a union asks every member and takes the one that
// holds the session.
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
		buf := zip(encodeIDs16(chunk))
		// The members of a union read at once, each on its own node.
		replies := make([][]byte, len(parts))
		errs := make([]error, len(parts))
		var wg sync.WaitGroup
		for j, p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t, err := p.incr(ctx, "digests_at", len(buf), p.term, buf)
				if err == nil {
					replies[j], err = unzip(erl.Bytes(t[1]))
					if err != nil {
						err = fmt.Errorf("digests_at on %s: %w", p.name(), err)
					}
				}
				errs[j] = err
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for j, p := range parts {
			b := replies[j]
			for _, id := range chunk {
				if len(b) == 0 {
					return nil, fmt.Errorf("digests_at on %s: short reply", p.name())
				}
				if b[0] == 0 {
					b = b[1:]
					continue
				}
				if len(b) < 13 {
					return nil, fmt.Errorf("digests_at on %s: short reply", p.name())
				}
				out[id] = digestRow{Digest: binary.BigEndian.Uint32(b[1:]), LastAccessed: int64(binary.BigEndian.Uint64(b[5:]))}
				b = b[13:]
			}
		}
	}
	return out, nil
}

// changedAt returns when each id last changed in the record (0: never).
func (s *side) changedAt(ctx context.Context, ids []string) (map[string]int64, error) {
	buf := zip(encodeIDs16(ids))
	t, err := s.incr(ctx, "changed_at", len(buf), s.term, buf)
	if err != nil {
		return nil, err
	}
	b := erl.Bytes(t[1])
	if len(b) != 8*len(ids) {
		return nil, fmt.Errorf("changed_at on %s: %d bytes for %d ids", s.name(), len(b), len(ids))
	}
	out := make(map[string]int64, len(ids))
	for i, id := range ids {
		out[id] = int64(binary.BigEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

// zip and unzip are zlib (erlang's zlib:compress/uncompress): lists of
// ids are half their size compressed, and bytes on the wire are what a
// cycle is measured on.
func zip(b []byte) []byte {
	var out bytes.Buffer
	w := zlib.NewWriter(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	return out.Bytes()
}

func unzip(b []byte) ([]byte, error) {
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(r); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func encodeIDs16(ids []string) []byte {
	n := 0
	for _, id := range ids {
		n += 2 + len(id)
	}
	buf := make([]byte, 0, n)
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(id)))
		buf = append(buf, id...)
	}
	return buf
}

func parseIDs16(b []byte) ([]string, error) {
	var out []string
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return nil, errors.New("truncated id frame")
		}
		n := int(binary.BigEndian.Uint16(b))
		out = append(out, string(b[2:2+n]))
		b = b[2+n:]
	}
	return out, nil
}

func parsePresent(b []byte) (map[string]digestRow, error) {
	out := map[string]digestRow{}
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated row frame")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n+12 {
			return nil, errors.New("truncated row frame")
		}
		out[string(b[2:2+n])] = digestRow{Digest: binary.BigEndian.Uint32(b[2+n:]), LastAccessed: int64(binary.BigEndian.Uint64(b[6+n:]))}
		b = b[14+n:]
	}
	return out, nil
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
	var wire, trips atomic.Int64
	rs := newSide(c, rec, &wire, &trips, nil)
	ot := newSide(c, other, &wire, &trips, nil)
	if len(ot.parts) > 0 {
		return 0, 0, 0, errors.New("native incremental: the other side must be one store")
	}
	t, err := c.Agent(ctx, rs.node, "migctl_incr:native", rs.term, etf.Atom(ot.node), ot.term, since)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("native incremental on %s: %w", rs.node, err)
	}
	return int(erl.Int64(t[1])), int(erl.Int64(t[2])), time.Duration(erl.Int64(t[3])) * time.Microsecond, nil
}
