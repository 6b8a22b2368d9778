package consistency

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// Kind is the kind of a difference.
type Kind string

// The kinds of difference a check reports.
const (
	KindMismatched      Kind = "mismatched"
	KindMissingInTarget Kind = "missing_in_target"
	KindExtraInTarget   Kind = "extra_in_target"
	// KindNotSession is a row of either store that is not an erlmcp
	// session (an id that is not a binary, a value that is not a map, a
	// record of another shape). It cannot be compared, so it is reported
	// as a problem rather than passed over: two stores are never said to
	// agree about rows the check could not read. Its samples carry the
	// row's key as Erlang prints it; it is never in Differences (repair
	// has nothing to copy).
	KindNotSession Kind = "not_a_session"
	// KindUnsettled is a session whose older copy kept changing on every
	// read (Report.Unsettled): samples only, never in Differences.
	KindUnsettled Kind = "unsettled"
)

// SampleMethod is how a sample is drawn.
type SampleMethod string

// Sample methods.
const (
	// SampleAuto uses SampleSlots when the stores hold more than
	// 16 × Sample sessions, else SampleHashRanges: a scan costs about 1-8 µs
	// a row (ETS to DETS), a slot read 10-30 µs.
	SampleAuto SampleMethod = ""
	// SampleHashRanges: random subranges of the hash space covering
	// Sample/rows of it; both sides list the rows in them (one pass each).
	// Exactly uniform over the union of both stores' keys.
	SampleHashRanges SampleMethod = "hash-ranges"
	// SampleSlots: each side draws random hash slots of its own table on
	// its node, in one call, every slot with the same probability
	// Sample/rows (rows: the larger store's), and lists every row of them;
	// then each side is asked, one call per batch, about the other's draw
	// (the source: which of the target's ids it holds; the target: its
	// digests of the source's ids). A session on both sides counts only
	// when the source drew it: exactly uniform over the union (a key is in
	// a drawn slot with the same probability whatever slot it is in). No
	// scan; a DETS file is read directly on its node (validated slot by
	// slot, through its server when that fails), not one request to its
	// server per slot or key.
	SampleSlots SampleMethod = "slots"
	// SampleSlotsLookup is SampleSlots (its former name, when SampleSlots
	// meant SampleDETSSlots).
	SampleSlotsLookup SampleMethod = "slots-lookup"
	// SampleDETSSlots: when one side is a single DETS file, random slots of
	// that file are read and the other side lists its sessions whose keys
	// fall in the same slots (DETS's slot function is a function of the
	// key and the file's slot count; one pass over the other side's keys,
	// no lookups on the DETS file): exactly uniform over the union.
	// Otherwise as SampleSlots.
	SampleDETSSlots SampleMethod = "dets-slots"
)

// Kinds lists every Kind in report order.
var Kinds = []Kind{KindMismatched, KindMissingInTarget, KindExtraInTarget, KindNotSession}

// Options tune a check. The zero value (plus Client) is a full check with
// the default rule.
type Options struct {
	// Client reaches the nodes (required).
	Client *erl.Client
	// Sample > 0 checks about that many sessions drawn uniformly at random
	// over the key space instead of all of them.
	Sample int
	// Seed makes a sample reproducible; 0 draws a random seed.
	Seed uint64
	// SampleMethod chooses how a sample is drawn (see the package
	// documentation); default SampleAuto.
	SampleMethod SampleMethod
	// Rule is the comparison rule.
	Rule Rule
	// RecheckDelay is the wait before a difference is read again; only
	// differences that survive every recheck are reported. Default 2 s.
	RecheckDelay time.Duration
	// Rechecks is how many times a difference is read again. Default 2;
	// negative disables rechecking (tests of the first pass only).
	Rechecks int
	// BucketRows is the number of rows per bucket aimed at in the first
	// round of a full check. Default 64: the sums are then ~0.2 bytes per
	// row, far below 1 % of the ~500-byte sessions.
	BucketRows int
	// ListRows bounds the rows listed (id, digest, last_accessed) in one
	// round; differing buckets holding more are split again instead.
	// Default 20000.
	ListRows int
	// SplitFactor is how many sub-buckets a differing bucket is cut into.
	// Default 64.
	SplitFactor int
	// MaxSamples caps the sample rows per kind in the report. Default 10.
	MaxSamples int
	// Pace, when set, is called before every call to a node (the monitor
	// passes its rate limiter).
	Pace func(context.Context) error
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
	// NoInFlightExclusion switches off, for a full check, leaving the keys
	// written while it runs out of the buckets (see InFlight): every row
	// is then compared in the buckets, as before.
	NoInFlightExclusion bool
	// InFlightMargin is how far before the check's start the keys left out
	// as in flight reach back (see inFlightSince for why). Default
	// DefaultInFlightMargin.
	InFlightMargin time.Duration
}

func (o Options) withDefaults() Options {
	o.Rule = o.Rule.withDefaults()
	if o.RecheckDelay == 0 {
		o.RecheckDelay = 2 * time.Second
	}
	if o.Rechecks == 0 {
		o.Rechecks = 2
	}
	if o.BucketRows <= 0 {
		o.BucketRows = 64
	}
	if o.ListRows <= 0 {
		o.ListRows = 20000
	}
	if o.SplitFactor < 2 {
		o.SplitFactor = 64
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.InFlightMargin <= 0 {
		o.InFlightMargin = DefaultInFlightMargin
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	return o
}

// Difference is one session that differs between the stores.
type Difference struct {
	Kind Kind   `json:"kind"`
	ID   string `json:"id"`
	// Diff is a short readable description ("metadata[<<"seq">>]: 1 vs 2").
	Diff string `json:"diff"`
	// Newer is the side holding the newer copy: "source", "target" or ""
	// (same last_accessed, or unknown).
	Newer string `json:"newer,omitempty"`
	// fp are fingerprints of the copies read (source, target; 0: absent),
	// to tell a copy that changed between two reads (recheck).
	fp [2]uint64
}

// Phases are the times spent in each phase of a check.
type Phases struct {
	Checksums time.Duration `json:"checksums_ns"`
	Listing   time.Duration `json:"listing_ns"`
	Compare   time.Duration `json:"compare_ns"`
	Recheck   time.Duration `json:"recheck_ns"`
}

// Report is the result of a check, after vitess vdiff's report: counts,
// capped samples per kind, and the cost (bytes on the wire, round trips,
// time per phase).
type Report struct {
	Source    string    `json:"source"`
	Target    string    `json:"target"`
	Mode      string    `json:"mode"` // "full" or "sample"
	Seed      uint64    `json:"seed,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// SourceRows and TargetRows are the stores' sizes when the check began.
	SourceRows int64 `json:"source_rows"`
	TargetRows int64 `json:"target_rows"`
	// Processed is the number of distinct sessions compared, Matching of
	// them agreed under the rule; Expired were skipped as expired (on the
	// newest copy); Rechecked differed at first and were read again.
	Processed       int64 `json:"processed"`
	Matching        int64 `json:"matching"`
	Mismatched      int64 `json:"mismatched"`
	MissingInTarget int64 `json:"missing_in_target"`
	ExtraInTarget   int64 `json:"extra_in_target"`
	Expired         int64 `json:"expired"`
	Rechecked       int64 `json:"rechecked"`
	// Unsettled differed on every read because the older copy kept
	// changing between reads: writes in flight on a key the application
	// rewrites faster than the rechecks (a hot session on a loaded node),
	// not a copy that stopped receiving writes. They are not differences
	// (the report can be Clean); the samples list them under "unsettled".
	Unsettled int64 `json:"unsettled_in_flight,omitempty"`
	// NotSessions counts the rows that are not erlmcp sessions, both
	// stores together (a full check: every such row; a sample: those
	// drawn). They are not compared and make the report not Clean.
	NotSessions int64 `json:"not_sessions"`
	// BytesMoved counts payload bytes that crossed the network, both ways.
	BytesMoved int64 `json:"bytes_moved"`
	RoundTrips int64 `json:"round_trips"`
	// BytesByCall splits BytesMoved by node-side function (sums, keys,
	// changed_rows, get_many, ...): where a check's bytes went.
	BytesByCall map[string]int64 `json:"bytes_by_call,omitempty"`
	// Rounds is the number of checksum rounds (table passes) per side.
	Rounds   int           `json:"rounds"`
	Duration time.Duration `json:"duration_ns"`
	Phases   Phases        `json:"phases"`
	// Samples holds at most MaxSamples differences per kind.
	Samples map[Kind][]Difference `json:"samples,omitempty"`
	// Differences is every difference found (used by Repair; not printed).
	Differences []Difference `json:"-"`
	// InFlight (full checks only) says whether the keys written during the
	// check were left out of the buckets and verified by key, how many, or
	// why not.
	InFlight *InFlight `json:"in_flight,omitempty"`
}

// Clean reports whether the check found no difference and no row that is
// not a session.
// record counts the differences a check confirmed by kind, keeps up to
// maxSamples of each kind to show, and keeps them all in Differences.
func (r *Report) record(diffs []Difference, maxSamples int) {
	for _, d := range diffs {
		switch d.Kind {
		case KindMismatched:
			r.Mismatched++
		case KindMissingInTarget:
			r.MissingInTarget++
		case KindExtraInTarget:
			r.ExtraInTarget++
		}
		if len(r.Samples[d.Kind]) < maxSamples {
			r.Samples[d.Kind] = append(r.Samples[d.Kind], d)
		}
	}
	r.Differences = diffs
}

func (r *Report) Clean() bool {
	return r.Mismatched+r.MissingInTarget+r.ExtraInTarget+r.NotSessions == 0
}

// Count returns the number of differences of a kind.
func (r *Report) Count(k Kind) int64 {
	switch k {
	case KindMismatched:
		return r.Mismatched
	case KindMissingInTarget:
		return r.MissingInTarget
	case KindExtraInTarget:
		return r.ExtraInTarget
	case KindNotSession:
		return r.NotSessions
	}
	return 0
}

// Check compares two stores (see the package documentation for the model
// and the comparison rule) and returns the report. An error means the
// check could not be completed; differences are not errors.
func Check(ctx context.Context, source, target backends.Store, opts Options) (*Report, error) {
	if opts.Client == nil {
		return nil, ErrNoClient
	}
	o := opts.withDefaults()
	start := time.Now()
	// Connect one node at a time before the two sides work in parallel:
	// two first calls racing to connect to the same node make the
	// distribution handshake fail.
	for _, n := range append(backends.NodesOf(source), backends.NodesOf(target)...) {
		if err := o.Client.Connect(ctx, n); err != nil {
			return nil, err
		}
	}
	var wire, trips atomic.Int64
	src := newSide(o.Client, source, &wire, &trips, o.Pace)
	tgt := newSide(o.Client, target, &wire, &trips, o.Pace)
	calls := &callBytes{m: map[string]int64{}}
	src.countCalls(calls)
	tgt.countCalls(calls)
	rep := &Report{Source: src.name(), Target: tgt.name(), Mode: "full", StartedAt: o.Now().UTC(), Samples: map[Kind][]Difference{}}
	log := o.Log.With("source", rep.Source, "target", rep.Target)

	var err error
	var listed listing
	if o.Sample > 0 {
		rep.Mode, rep.Seed = "sample", o.Seed
		listed, err = sampleList(ctx, src, tgt, o, rep, log)
	} else {
		listed, err = fullList(ctx, src, tgt, o, rep, log)
	}
	if err != nil {
		return nil, err
	}

	// Compare the listed rows: equal content digests and last_accessed
	// within the tolerance agree without moving the sessions.
	t0 := time.Now()
	tol := o.Rule.toleranceMs()
	var suspects []string
	for id := range union(listed.src, listed.tgt) {
		rep.Processed++
		a, okA := listed.src[id]
		b, okB := listed.tgt[id]
		if okA && okB && a.Digest == b.Digest && (tol == 0 || absDiff(a.LastAccessed, b.LastAccessed) <= tol) {
			rep.Matching++
			continue
		}
		suspects = append(suspects, id)
	}
	sort.Strings(suspects)
	log.Debug("listed rows compared", "suspects", len(suspects))

	// Suspects: read both copies and apply the rule; then read what still
	// differs again after a delay, so in-flight writes settle.
	diffs, err := judgeAll(ctx, src, tgt, suspects, o, rep)
	rep.Phases.Compare = time.Since(t0)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	diffs, unsettled, err := recheck(ctx, src, tgt, diffs, o, rep)
	if err != nil {
		return nil, err
	}
	rep.recordUnsettled(unsettled, o.MaxSamples)
	rep.Phases.Recheck = time.Since(t1)
	rep.record(diffs, o.MaxSamples)
	for i, odd := range listed.odd {
		rep.NotSessions += odd.N
		for _, k := range odd.Keys {
			if len(rep.Samples[KindNotSession]) < o.MaxSamples {
				rep.Samples[KindNotSession] = append(rep.Samples[KindNotSession],
					Difference{Kind: KindNotSession, ID: k, Diff: [2]string{"source", "target"}[i] + " row is not an erlmcp session ({Id :: binary(), Session :: map()}): not compared"})
			}
		}
	}
	if rep.NotSessions > 0 {
		log.Warn("rows that are not sessions were not compared", "rows", rep.NotSessions)
	}
	// Suspects that matched or expired on a recheck moved out of the
	// difference counts; what is not a difference or expired matched.
	rep.Matching = rep.Processed - rep.Mismatched - rep.MissingInTarget - rep.ExtraInTarget - rep.Expired - rep.Unsettled
	rep.BytesMoved, rep.RoundTrips = wire.Load(), trips.Load()
	rep.BytesByCall = calls.snapshot()
	rep.Duration = time.Since(start)
	log.Debug("check done", "processed", rep.Processed, "differences", len(diffs), "bytes", rep.BytesMoved, "duration", rep.Duration)
	return rep, nil
}

// recheck reads the differences again, o.Rechecks times o.RecheckDelay
// apart, and returns those that still differ: a write in flight between
// the stores settles meanwhile. rep.Rechecked counts the first round.
//
// A difference whose older copy changed since the previous read is a
// write still in flight (the newer copy is the application's latest
// write, the older one is catching up): after the planned rechecks, those
// are read again, up to o.Rechecks more times, and those still moving
// then are returned as unsettled, not as differences (Check counts them
// in Report.Unsettled; Incremental carries them to its next cycle). One whose
// older copy did not change stays a difference: a copy that stopped
// receiving writes is what a check must report, however hot the key.
// (Measured in the 1.4M big run: one hot session, rewritten every ~2 s
// on a node whose Mnesia commits were slowed by log dumps, was caught
// mid-write on all three reads and reported as mismatched.)
func recheck(ctx context.Context, src, tgt *side, diffs []Difference, o Options, rep *Report) (still, unsettled []Difference, err error) {
	if o.Rechecks <= 0 {
		return diffs, nil, nil
	}
	var settled []Difference // older copy unchanged in the last round
	extra := 0
	for round := 0; len(diffs) > 0; round++ {
		if round == 0 {
			rep.Rechecked = int64(len(diffs))
		}
		if round >= o.Rechecks {
			if extra >= o.Rechecks {
				unsettled, diffs = diffs, nil
				break
			}
			extra++
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(o.RecheckDelay):
		}
		prev := make(map[string]Difference, len(diffs))
		ids := make([]string, 0, len(diffs))
		for _, d := range diffs {
			ids = append(ids, d.ID)
			prev[d.ID] = d
		}
		now, err := judgeAll(ctx, src, tgt, ids, o, rep)
		if err != nil {
			return nil, nil, err
		}
		diffs = diffs[:0]
		for _, d := range now {
			if round+1 >= o.Rechecks && !olderMoved(prev[d.ID], d) {
				settled = append(settled, d)
				continue
			}
			diffs = append(diffs, d)
		}
		if round+1 < o.Rechecks {
			// The planned rechecks read every difference.
			diffs = append(diffs, settled...)
			settled = nil
		}
	}
	return append(settled, diffs...), unsettled, nil
}

// recordUnsettled counts the sessions still in flight at the last recheck
// (Report.Unsettled) and keeps samples of them.
func (r *Report) recordUnsettled(ds []Difference, max int) {
	for _, d := range ds {
		r.Unsettled++
		if len(r.Samples[KindUnsettled]) < max {
			d.Kind = KindUnsettled
			r.Samples[KindUnsettled] = append(r.Samples[KindUnsettled], d)
		}
	}
}

// olderMoved: the copy that was older at the previous read (cur.Newer
// names the newer side; both when unknown) is not what it was then.
func olderMoved(prev, cur Difference) bool {
	switch cur.Newer {
	case "source":
		return prev.fp[1] != cur.fp[1]
	case "target":
		return prev.fp[0] != cur.fp[0]
	}
	return prev.fp != cur.fp
}

// fingerprint of a copy read (0: absent).
func fingerprint(blob []byte) uint64 {
	if blob == nil {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write(blob)
	return h.Sum64() | 1
}

// judgeAll reads the copies of ids on both sides and returns the ids that
// differ under the rule. Expired ones are counted (once) and dropped.
func judgeAll(ctx context.Context, src, tgt *side, ids []string, o Options, rep *Report) ([]Difference, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	a, b, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (map[string][]byte, error) {
		return s.getMany(ctx, ids)
	})
	if err != nil {
		return nil, err
	}
	// Expiry by the source node's clock (see clockOffset); o.Now stays the
	// base so that tests can move time.
	off, err := src.clockOffset(ctx)
	if err != nil {
		return nil, err
	}
	if off > time.Second || off < -time.Second {
		o.Log.Debug("the source node's clock differs from migctl's: expiry is judged by the node's", "offset", off)
	}
	now := o.Now().Add(off)
	var out []Difference
	for _, id := range ids {
		v, diff, newer := o.Rule.judge(a[id], b[id], now)
		switch v {
		case vExpired:
			rep.Expired++
			continue
		case vMismatch:
			out = append(out, Difference{Kind: KindMismatched, ID: id, Diff: diff, Newer: newer})
		case vMissing:
			out = append(out, Difference{Kind: KindMissingInTarget, ID: id, Diff: diff, Newer: newer})
		case vExtra:
			out = append(out, Difference{Kind: KindExtraInTarget, ID: id, Diff: diff, Newer: newer})
		default:
			continue
		}
		out[len(out)-1].fp = [2]uint64{fingerprint(a[id]), fingerprint(b[id])}
	}
	return out, nil
}

// listing is what each side listed: id -> digest and last_accessed, and
// the rows each side met that are not sessions (source, target).
type listing struct {
	src, tgt map[string]digestRow
	odd      [2]oddRows
}

func union(a, b map[string]digestRow) map[string]struct{} {
	u := make(map[string]struct{}, len(a)+len(b))
	for k := range a {
		u[k] = struct{}{}
	}
	for k := range b {
		u[k] = struct{}{}
	}
	return u
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// both runs f on the two sides at once: each side's pass runs where its
// data lives, so a round costs the slower side's time, not the sum.
func both[T any](ctx context.Context, src, tgt *side, f func(context.Context, *side) (T, error)) (T, T, error) {
	var a, b T
	var errA, errB error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if a, errA = f(ctx, src); errA != nil {
			cancel()
		}
	}()
	if b, errB = f(ctx, tgt); errB != nil {
		cancel()
	}
	<-done
	return a, b, errors.Join(errA, errB)
}

// fullList bisects: checksums of hash buckets on both nodes, one pass per
// round for all ranges; buckets that agree are done (their rows counted as
// processed and matching), buckets that differ are split further, or, once
// they hold few enough rows, listed row by row.
//
// Keys in flight (see InFlight): when the change recorders allow it, every
// round leaves out the keys changed since shortly before the check began
// (on both sides), and once the rounds are done those keys are read by key
// on both sides and added to the listing. A node that cannot leave them
// out (its recorder stopped, restarted or never ran) makes the check start
// its rounds again without exclusion, and the report says so.
func fullList(ctx context.Context, src, tgt *side, o Options, rep *Report, log *slog.Logger) (listing, error) {
	t0 := time.Now()
	counts, countt, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (int64, error) { return s.store.Count(ctx) })
	if err != nil {
		return listing{}, err
	}
	rep.SourceRows, rep.TargetRows = counts, countt
	n := max(counts, countt)
	ex, inf := planInFlight(ctx, src, tgt, n, o, log)
	rep.InFlight = inf
	giveUp := func(err error) {
		log.Warn("keys in flight compared in the buckets after all", "err", err)
		inf.Used, inf.WhyNot, inf.VerifiedByKey, inf.ExcludedRows = false, "given up during the check: "+err.Error(), 0, 0
		ex = nil
	}
	for {
		l, matched, excluded, err := bucketList(ctx, src, tgt, o, rep, log, n, t0, ex)
		if ex != nil && isNoCoverage(err) {
			giveUp(err)
			continue
		}
		if err != nil {
			return listing{}, err
		}
		if ex != nil {
			t1 := time.Now()
			inf.ExcludedRows = excluded
			inf.KeptPasses = src.keptPasses() + tgt.keptPasses()
			verified, together, err := verifyInFlight(ctx, src, tgt, ex, &l)
			rep.Phases.Listing += time.Since(t1)
			if isNoCoverage(err) {
				giveUp(err)
				continue
			}
			if err != nil {
				return listing{}, err
			}
			inf.VerifiedByKey, inf.ReadTogether = verified, together
			log.Debug("keys in flight verified by key", "keys", verified, "excluded_rows", excluded, "read_together", together,
				"seconds", time.Since(t1).Seconds())
		}
		rep.Processed += matched
		return l, nil
	}
}

// bucketList runs the rounds of fullList (n: the larger store's rows; ex:
// the keys in flight to leave out, or nil) and returns the listing of the
// differing buckets, the rows of the buckets that agreed, and the rows the
// last round left out (both sides).
func bucketList(ctx context.Context, src, tgt *side, o Options, rep *Report, log *slog.Logger, n int64, t0 time.Time, ex *agentapi.ExcludeChanged) (listing, int64, int64, error) {
	b := int(min(max(n/int64(o.BucketRows), 16), 1<<20))
	ranges := []bucketdiff.Range{{Span: bucketdiff.Full, Buckets: b}}
	quantum := o.Rule.toleranceMs()
	var matched int64
	confirmed := ex == nil // see below
	var odd [2]oddRows     // from the first round, a pass over each whole table
	if ex != nil {
		// The stores' nodes keep the first round's rows for the later
		// rounds and the listing (see agentapi.ExcludeChanged.Pass): at
		// 1.8M sessions under traffic each of those read the whole DETS
		// file again (55-76 s) for a few per cent of its rows.
		e := *ex
		e.Pass = mrand.Int64N(1<<62) + 1
		ex = &e
		defer func() {
			src.dropPass(ctx, e.Pass, log)
			tgt.dropPass(ctx, e.Pass, log)
		}()
	}
	type sumsOdd struct {
		sums     []bucketdiff.Sum
		odd      oddRows
		excluded int64
	}
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return listing{}, 0, 0, err
		}
		rep.Rounds++
		sctx, cancel := scanContext(ctx, n)
		ra, rb, err := both(sctx, src, tgt, func(ctx context.Context, s *side) (sumsOdd, error) {
			sums, odd, excluded, err := s.sums(ctx, ranges, quantum, ex)
			return sumsOdd{sums, odd, excluded}, err
		})
		cancel()
		if err != nil {
			return listing{}, 0, 0, err
		}
		if first {
			odd = [2]oddRows{ra.odd, rb.odd}
		}
		round := bucketdiff.Compare(ranges, ra.sums, rb.sums)
		matched += round.Matched
		log.Debug("checksum round", "round", rep.Rounds, "ranges", len(ranges), "differing", len(round.Differ), "rows", round.Rows,
			"excluded", ra.excluded+rb.excluded, "kept_passes", src.keptPasses()+tgt.keptPasses())
		list, split := round.Next(int64(o.ListRows), o.SplitFactor)
		if (list != nil || split != nil) && !confirmed {
			// Leaving keys out cannot help with a key first written while
			// a pass ran: each side's set is taken when its pass starts,
			// and a side whose pass is slower (a DETS file, seconds under
			// load) reads such a key after its change where the faster
			// side read it before. The next round's sets hold it on both
			// sides. So the differing buckets are summed once more as
			// they are (12 bytes each a side, one more pass) and only
			// those that still differ are listed (about 7 KB a 64-row
			// bucket, both sides) or split. Before splitting too: at 1.4M
			// sessions under 1,000 ops/s the first round found 4,771 of
			// 22k buckets differing (hot keys changed during the first
			// pass), and splitting them 64 ways summed 305k one-row
			// buckets on six nodes, 24 MB, where this round costs 0.3 MB
			// and clears most of them.
			confirmed = true
			split = make([]bucketdiff.Range, len(round.Differ))
			for i, d := range round.Differ {
				split[i] = bucketdiff.Range{Span: d, Buckets: 1}
			}
			list = nil
		}
		if list == nil && split == nil {
			rep.Phases.Checksums = time.Since(t0)
			return listing{src: map[string]digestRow{}, tgt: map[string]digestRow{}, odd: odd}, matched, ra.excluded + rb.excluded, nil
		}
		if list != nil {
			rep.Phases.Checksums = time.Since(t0)
			t1 := time.Now()
			limit := int(round.Rows) + o.ListRows // rows may grow under live load
			lctx, cancel := scanContext(ctx, n)
			a, bb, err := both(lctx, src, tgt, func(ctx context.Context, s *side) (map[string]digestRow, error) {
				m, _, err := s.digests(ctx, list, limit, ex) // odd rows: counted in round 1
				return m, err
			})
			cancel()
			rep.Phases.Listing = time.Since(t1)
			if err != nil {
				return listing{}, 0, 0, err
			}
			log.Debug("differing buckets listed", "ranges", len(list), "source_rows", len(a), "target_rows", len(bb),
				"seconds", rep.Phases.Listing.Seconds(), "kept_passes", src.keptPasses()+tgt.keptPasses())
			return listing{src: a, tgt: bb, odd: odd}, matched, ra.excluded + rb.excluded, nil
		}
		ranges = split
	}
}

// scanContext bounds a call that scans a whole table: the client's default
// call timeout is meant for short calls, and a pass over millions of DETS
// rows takes longer: about 8 µs a row on a quiet node, but more than 90 µs
// a row for the 1.4M-session file of the big run (the DETS server shared
// with 1,000 client ops/s, five nodes on two cores), where 50 µs allowed
// ran out. The bound is there to end a call to a node that hangs, not to
// judge its speed: 250 µs a row. A shorter deadline of the caller's is kept.
func scanContext(ctx context.Context, rows int64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Minute+time.Duration(rows)*250*time.Microsecond)
}

// sampleList draws the sample by o.SampleMethod (auto chosen here by the
// row counts): dets-slots (detsSlotList, slots when no side is a single
// DETS file), slots (slotList), or hash-ranges, done here: the hash space
// is cut into equal strata and in each a subrange at a random offset is
// taken, with the subranges together covering Sample/rows of the space.
// Every session's key hash is uniform, so every session is in the sample
// with the same probability, wherever it sits in either store (not the
// first N), and a session that exists on one side only is as likely to be
// drawn as any other.
func sampleList(ctx context.Context, src, tgt *side, o Options, rep *Report, log *slog.Logger) (listing, error) {
	t0 := time.Now()
	counts, countt, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (int64, error) { return s.store.Count(ctx) })
	if err != nil {
		return listing{}, err
	}
	rep.SourceRows, rep.TargetRows = counts, countt
	method := o.SampleMethod
	if method == SampleAuto {
		method = SampleHashRanges
		if max(counts, countt) > 16*int64(o.Sample) {
			method = SampleSlots
		}
	}
	if method == SampleDETSSlots {
		l, err := detsSlotList(ctx, src, tgt, o, counts, countt, log)
		if errors.Is(err, errNoDETSSide) {
			method = SampleSlots
		} else {
			rep.Rounds = 1
			rep.Phases.Listing = time.Since(t0)
			return l, err
		}
	}
	if method == SampleSlots || method == SampleSlotsLookup {
		l, err := slotList(ctx, src, tgt, o, counts, countt, log)
		rep.Rounds = 1
		rep.Phases.Listing = time.Since(t0)
		return l, err
	}
	ranges := sampleRanges(max(counts, countt), o.Sample, o.Seed)
	limit := 4*o.Sample + 1000
	sctx, cancel := scanContext(ctx, max(counts, countt))
	defer cancel()
	type digestsOdd struct {
		rows map[string]digestRow
		odd  oddRows
	}
	a, b, err := both(sctx, src, tgt, func(ctx context.Context, s *side) (digestsOdd, error) {
		m, odd, err := s.digests(ctx, ranges, limit, nil)
		return digestsOdd{m, odd}, err
	})
	rep.Rounds = 1
	rep.Phases.Listing = time.Since(t0)
	if err != nil {
		return listing{}, err
	}
	return listing{src: a.rows, tgt: b.rows, odd: [2]oddRows{a.odd, b.odd}}, nil
}

// slotList draws rows from each side's hash slots at the same rate
// (SampleSlots), then asks each side about the ids the other side drew.
// A session on both sides counts only when drawn from the source, one on
// the target only when drawn from the target: so every session of the
// union has the same chance, whichever side(s) hold it. The target gives
// its digests of the source's draw; the source only says which of the
// target's draw it holds (those leave the sample).
//
// Each side draws in one call on its node, and each question goes out as
// soon as the draw it is about is in, not after both draws: the two
// sides' draws and questions overlap instead of adding up.
func slotList(ctx context.Context, src, tgt *side, o Options, counts, countt int64, log *slog.Logger) (listing, error) {
	most := max(counts, countt)
	if most == 0 {
		return listing{src: map[string]digestRow{}, tgt: map[string]digestRow{}}, nil
	}
	rate := agentapi.Rate{Num: int64(o.Sample), Den: most}
	// Two seeds from one: the sides' draws are independent even when the
	// stores hash alike (two DETS files of the same slot count).
	seedS := int64(o.Seed & (1<<62 - 1))
	seedT := int64((o.Seed*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019) & (1<<62 - 1))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		a, b     map[string]digestRow // the draws
		tgtOfA   map[string]digestRow // the target's digests of a's ids
		srcHasB  map[string]bool      // which of b's ids the source holds
		odd      [2]oddRows           // drawn rows that are not sessions
		aIn, bIn = make(chan struct{}), make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		errs     []error
	)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		}()
	}
	draw := func(s *side, seed int64, out *map[string]digestRow, outOdd *oddRows, in chan struct{}) func() error {
		return func() error {
			m, odd, method, err := s.slotSample(ctx, rate, seed)
			if err != nil {
				return err
			}
			log.Debug("sample drawn", "side", s.name(), "rows", len(m), "method", method)
			*out, *outOdd = m, odd
			close(in)
			return nil
		}
	}
	// A question waits for its draw; when a call fails the others stop,
	// and the failing one reports.
	ready := func(in chan struct{}) bool {
		select {
		case <-in:
			return true
		case <-ctx.Done():
			return false
		}
	}
	run(draw(src, seedS, &a, &odd[0], aIn))
	run(draw(tgt, seedT, &b, &odd[1], bIn))
	run(func() error {
		if !ready(aIn) {
			return nil
		}
		var err error
		tgtOfA, err = tgt.sampleDigests(ctx, slices.Sorted(maps.Keys(a)))
		return err
	})
	run(func() error {
		if !ready(bIn) {
			return nil
		}
		var err error
		srcHasB, err = src.sampleMembers(ctx, slices.Sorted(maps.Keys(b)))
		return err
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return listing{}, err
	}
	if err := ctx.Err(); err != nil {
		return listing{}, err // the caller's context ended
	}
	for id, r := range b {
		if _, drawn := a[id]; drawn || srcHasB[id] {
			continue // on both sides: in the sample only when drawn from the source
		}
		tgtOfA[id] = r // on the target only
	}
	return listing{src: a, tgt: tgtOfA, odd: odd}, nil
}

// sampleRanges covers fraction sample/rows of the hash space with
// stratified random subranges.
func sampleRanges(rows int64, sample int, seed uint64) []bucketdiff.Range {
	const space = bucketdiff.Space
	if rows <= int64(sample) || rows == 0 {
		return []bucketdiff.Range{{Span: bucketdiff.Full, Buckets: 1}}
	}
	frac := float64(sample) / float64(rows)
	// About 8 sessions per subrange: small enough to spread the sample
	// over the whole key space, large enough to keep the request short.
	strata := uint64(max(1, min(sample/8, 1<<16)))
	stratum := space / strata
	width := uint64(frac * float64(stratum))
	if width == 0 {
		width = 1
	}
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]bucketdiff.Range, 0, strata)
	for i := uint64(0); i < strata; i++ {
		lo := i*stratum + rng.Uint64N(stratum-width+1)
		out = append(out, bucketdiff.Range{Span: bucketdiff.Span{Lo: lo, Hi: lo + width}, Buckets: 1})
	}
	return slices.Clip(out)
}
