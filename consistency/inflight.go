package consistency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// DefaultInFlightMargin is how far before a full check's start its
// exclusion of keys in flight reaches back (Options.InFlightMargin).
const DefaultInFlightMargin = 5 * time.Second

// InFlight says how a full check dealt with the sessions written while it
// ran. With exclusion (Used), the keys that the change recorders
// (migctl_recorder) of the nodes involved list as changed since SinceMs
// were left out of the bucket sums and listings on both sides, and were
// then read by key on both sides and compared like any listed row
// (rechecks included): a real difference on such a key is still reported.
type InFlight struct {
	// Used: the keys changed since SinceMs were left out of the buckets and
	// verified by key.
	Used bool `json:"used"`
	// WhyNot says why exclusion was not used, or why it was given up
	// during the check (every row was then compared in buckets, as without
	// it).
	WhyNot string `json:"why_not,omitempty"`
	// Table is the Mnesia table whose change record was read, SinceMs the
	// time (ms, the recorders' clock) from which changed keys were left
	// out, Nodes the nodes whose recorders were read.
	Table   string   `json:"table,omitempty"`
	SinceMs int64    `json:"since_ms,omitempty"`
	Nodes   []string `json:"nodes,omitempty"`
	// VerifiedByKey is the number of keys the recorders listed as changed
	// since SinceMs at the end of the bucket rounds (the union over
	// Nodes), each read by key on both sides.
	VerifiedByKey int64 `json:"verified_by_key"`
	// ExcludedRows is the number of rows the last bucket round left out,
	// both sides together (a row is counted on each side that holds it).
	ExcludedRows int64 `json:"excluded_rows"`
	// ReadTogether: each key's two copies were read back to back on the
	// node holding its DETS copy (a DETS source, a Mnesia target with a
	// local copy there), not in one call per side.
	ReadTogether bool `json:"read_together"`
	// KeptPasses is the number of later passes (sums rounds, listings,
	// counted per store and node) answered from the rows kept from the
	// check's first pass instead of reading the store again (migctl_pass).
	KeptPasses int64 `json:"kept_passes"`
}

// isMnesia: a Mnesia table read on one node (a change record exists for
// Mnesia tables only).
func isMnesia(s backends.Store) bool {
	_, u := s.(*backends.Union)
	return !u && s.Spec().Kind == backends.KindMnesia
}

// planInFlight decides whether a full check can leave the keys in flight
// out of its buckets, and from when. It returns the exclusion (nil when
// not used) and the report's InFlight, whose WhyNot says why not.
//
// Every node that computes sums (each node of either side) leaves out the
// keys its OWN recorder lists: both sides must leave out the same keys, or
// their sums differ by the rows one of them dropped. So every such node
// must run a recorder of the Mnesia table whose coverage reaches back to
// SinceMs; the node side refuses otherwise (agentapi.ErrNoRecorderCoverage),
// and then the check falls back to comparing every row.
func planInFlight(ctx context.Context, src, tgt *side, rows int64, o Options, log *slog.Logger) (*agentapi.ExcludeChanged, *InFlight) {
	inf := &InFlight{}
	if o.NoInFlightExclusion {
		inf.WhyNot = "switched off (Options.NoInFlightExclusion)"
		return nil, inf
	}
	var rec *side
	switch {
	case isMnesia(tgt.store):
		rec = tgt
	case isMnesia(src.store):
		rec = src
	default:
		inf.WhyNot = "neither store is a Mnesia table read on one node (the change recorder records Mnesia tables)"
		return nil, inf
	}
	inf.Table = rec.store.Spec().Table
	inf.Nodes = checkNodes(src, tgt)

	// The start, on the recorder's clock (the Mnesia node's), not ours:
	// SinceMs is compared with the times the recorders stamp.
	var now int64
	err := rec.paced(ctx, "mark", func(st agentapi.Store) (int64, error) {
		var err error
		now, _, err = agentapi.Incr{C: rec.c}.Mark(ctx, rec.node, st)
		return 0, err
	})
	if err != nil {
		inf.WhyNot = "reading the recorder's clock: " + err.Error()
		return nil, inf
	}
	infos := make([]agentapi.Recorder, len(inf.Nodes))
	for i, n := range inf.Nodes {
		err := rawCall(ctx, src, func() (int64, error) {
			var err error
			infos[i], err = agentapi.Cluster{C: src.c}.RecorderInfo(ctx, n, []string{inf.Table})
			return 0, err
		})
		if err != nil {
			inf.WhyNot = fmt.Sprintf("reading the change recorder on %s: %v", n, err)
			return nil, inf
		}
	}
	since, why := inFlightSince(now, o.InFlightMargin, inf.Table, inf.Nodes, infos)
	if why != "" {
		inf.WhyNot = why
		return nil, inf
	}
	// When most rows changed since then (a check right after a bulk copy
	// or a backfill), reading them all by key costs far more than the
	// buckets it would spare: compare them in the buckets. Counted on the
	// Mnesia node's recorder (changes/3 with no room for keys answers with
	// the count alone).
	var ch *agentapi.Changes
	err = rec.paced(ctx, "changes", func(st agentapi.Store) (n int64, err error) {
		ch, n, err = agentapi.Incr{C: rec.c}.Changes(ctx, rec.node, st, since, 0, nil)
		return n, err
	})
	if err != nil {
		inf.WhyNot = "counting the keys changed since the start: " + err.Error()
		return nil, inf
	}
	if why := tooManyChanged(int64(ch.Count), rows); why != "" {
		inf.WhyNot = why
		return nil, inf
	}
	inf.Used, inf.SinceMs = true, since
	log.Debug("keys in flight left out of the buckets", "table", inf.Table, "since", msText(since), "nodes", inf.Nodes)
	return &agentapi.ExcludeChanged{Table: inf.Table, SinceMs: since}, inf
}

// inFlightSince decides from when the keys in flight are left out: now
// (the recorder's clock) minus the margin, or the latest coverage start
// among the nodes' recorders if that is later (a recorder started
// recently: a key changed before its coverage is simply compared in the
// buckets). why says why no exclusion is possible: a node without a
// running recorder, or whose recorder does not record tab now.
func inFlightSince(now int64, margin time.Duration, tab string, nodes []string, infos []agentapi.Recorder) (since int64, why string) {
	// Why a margin before the start: a write in flight when the check
	// starts has one half in one store and the other on its way. phase1
	// writes DETS first, so its Mnesia half is stamped after the start and
	// left out anyway; but a write whose Mnesia half lands first (another
	// order, a retried second half, a replica applying a remote commit
	// late) is stamped before the start while the other store changes
	// after it, and, not left out, it would make its bucket differ between
	// the two sides' reads and be chased down to its row. Reaching back a
	// few seconds leaves those out too; it costs only the keys changed in
	// those seconds, read by key at the end. It also absorbs clock skew
	// between the node whose clock gives the start and the other
	// recorders. The boundary itself is harmless wherever it falls: a
	// commit stamped just before it on one node and just after on another
	// is left out on one side only, which makes its bucket differ (cost,
	// not a wrong verdict: every key left out anywhere is read by key,
	// every other key is compared in the buckets).
	since = now - margin.Milliseconds()
	for i, ri := range infos {
		c, ok := ri.Since[tab]
		switch {
		case !ri.Running:
			return 0, "no change recorder runs on " + nodes[i]
		case !ok || c < 0:
			return 0, fmt.Sprintf("the change recorder on %s does not record %s now (Mnesia stopped, or no copy of the table there)", nodes[i], tab)
		}
		since = max(since, c)
	}
	if since > now {
		return 0, fmt.Sprintf("the change record starts at %s, after the check's start (%s)", msText(since), msText(now))
	}
	return since, ""
}

// tooManyChanged says why not to leave out changed keys when more than a
// sixteenth of the rows (the larger store's) changed since the start:
// each is then read by key (some 50 bytes a key, both sides), where a
// quiet bucket costs 24 bytes for 64 rows.
func tooManyChanged(changed, rows int64) string {
	if changed*16 > rows {
		return fmt.Sprintf("%d keys changed since the start, more than a sixteenth of the %d rows: comparing them in the buckets costs less than reading them by key", changed, rows)
	}
	return ""
}

// checkNodes are the nodes that compute a check's sums (each node of
// either side), each once, in order.
func checkNodes(src, tgt *side) []string {
	var out []string
	for _, s := range []*side{src, tgt} {
		for _, n := range backends.NodesOf(s.store) {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// verifyInFlight reads back by key, on both sides, every key a pass left
// out anywhere: each node of each side lists the keys its own recorder
// has as changed since x.SinceMs with its store's digest of each
// (migctl_buckets:changed_rows, one call per node); their union holds
// every key left out, since a node's list only grows while its coverage
// holds. A key one node listed and another did not (a commit stamped on
// either side of SinceMs) is then read on the side that lacks it
// (digests_at). The rows read replace in the listing whatever the rounds
// listed for those keys, so that they are compared like every listed row:
// digests read at nearly the same moment, then the sessions of those that
// differ, then the rechecks. It returns how many keys it read, and whether
// they were read together (below). A node whose
// record no longer reaches back to SinceMs (recorder restarted, pruned) is
// an error wrapping agentapi.ErrNoRecorderCoverage: what it left out can
// no longer be listed.
//
// When the target is a Mnesia table and the source DETS files (one, or a
// union), each source node reads its DETS row and its local Mnesia copy of
// every key back to back in the same call (readInFlightPaired): the keys
// in flight are the hot ones, and read in two separate calls their two
// copies were seconds apart, long enough for 8,032 of 14,441 to differ at
// 1.8M sessions under 1,000 ops/s and be fetched whole and read again.
// The Mnesia row of a key is then the one read beside the DETS copy that
// holds it (a replica of the same table, on that node). A node without a
// local copy, or an agent without the call, falls back to the separate
// reads.
func verifyInFlight(ctx context.Context, src, tgt *side, x *agentapi.ExcludeChanged, l *listing) (n int64, together bool, err error) {
	a, b, together, err := readInFlightPaired(ctx, src, tgt, x)
	if !together {
		a, b, err = readInFlight(ctx, src, tgt, x)
	}
	if err != nil {
		return 0, false, err
	}
	all := unionKeys(append(slices.Clone(a.listed), b.listed...))
	fa, fb, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (map[string]digestRow, error) {
		r := a
		if s == tgt {
			r = b
		}
		return s.digestsAt(ctx, uncovered(all, r.listed))
	})
	if err != nil {
		return 0, false, err
	}
	maps.Copy(a.rows, fa)
	maps.Copy(b.rows, fb)
	mergeByKey(l, all, a.rows, b.rows)
	return int64(len(all)), together, nil
}

// inFlightRead is one side's rows of the keys in flight, and per part of
// the side the keys its node listed (and read).
type inFlightRead struct {
	rows   map[string]digestRow
	listed []map[string]bool
}

// readInFlight reads the keys in flight on each side separately.
func readInFlight(ctx context.Context, src, tgt *side, x *agentapi.ExcludeChanged) (inFlightRead, inFlightRead, error) {
	return both(ctx, src, tgt, func(ctx context.Context, s *side) (inFlightRead, error) { return readOwn(ctx, s, x) })
}

// readOwn is one side's read of the keys its nodes' recorders list.
func readOwn(ctx context.Context, s *side, x *agentapi.ExcludeChanged) (inFlightRead, error) {
	r := inFlightRead{rows: map[string]digestRow{}}
	err := s.pass(ctx, "changed_rows", func(p *side, st agentapi.Store) (int64, error) {
		c, err := agentapi.Buckets{C: p.c}.ChangedRows(ctx, p.node, st, x.Table, x.SinceMs)
		listed := make(map[string]bool, len(c.Listed))
		for _, id := range c.Listed {
			listed[id] = true
		}
		for id, k := range c.Present {
			r.rows[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
		}
		r.listed = append(r.listed, listed)
		return c.Bytes, err
	})
	return r, err
}

// readInFlightPaired reads the keys in flight of a DETS source (one file or
// a union) and a Mnesia target together, on each source node (paired is
// false when the stores are of other kinds or a source node cannot: the
// caller then reads them separately). The target's row of a key is the one
// read beside the DETS row that holds it; for a key no DETS file holds, an
// absent row if some node found it absent from both its stores at once (a
// session deleted meanwhile: both deletes seen together), else the last
// node's read.
// The target also reads the keys its own recorder lists, as it does
// without pairing: its passes left those out, and its node may have
// listed a key no source node did (a commit stamped on either side of
// SinceMs); such a key's target row is that read.
func readInFlightPaired(ctx context.Context, src, tgt *side, x *agentapi.ExcludeChanged) (a, b inFlightRead, paired bool, err error) {
	parts := src.parts
	if len(parts) == 0 {
		parts = []*side{src}
	}
	if !isMnesia(tgt.store) {
		return a, b, false, nil
	}
	for _, p := range parts {
		if p.store.Spec().Kind != backends.KindDETS {
			return a, b, false, nil
		}
	}
	pair := tgt.store.Spec().Table
	a.rows = map[string]digestRow{}
	type tgtRead struct {
		row     digestRow
		present bool
	}
	owner := map[string]tgtRead{} // read beside the DETS copy that holds the key
	last := map[string]tgtRead{}  // read by the last node that listed the key
	gone := map[string]bool{}     // absent from some node's two stores at once
	var own inFlightRead          // the target's read of its own recorder's keys
	var srcErr error
	_, _, err = both(ctx, src, tgt, func(ctx context.Context, s *side) (struct{}, error) {
		if s == tgt {
			r, err := readOwn(ctx, tgt, x)
			own = r
			return struct{}{}, err
		}
		srcErr = src.pass(ctx, "changed_rows", func(p *side, st agentapi.Store) (int64, error) {
			ca, cb, err := agentapi.Buckets{C: p.c}.ChangedRowsPaired(ctx, p.node, st, pair, x.Table, x.SinceMs)
			if err != nil {
				return ca.Bytes + cb.Bytes, err
			}
			listed := make(map[string]bool, len(ca.Listed))
			for _, id := range ca.Listed {
				listed[id] = true
				k, inTgt := cb.Present[id]
				t := tgtRead{row: digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}, present: inTgt}
				last[id] = t
				s, inSrc := ca.Present[id]
				switch {
				case inSrc:
					a.rows[id] = digestRow{Digest: s.Digest, LastAccessed: s.LastAccessed}
					owner[id] = t
				case !inTgt:
					gone[id] = true
				}
			}
			a.listed = append(a.listed, listed)
			return ca.Bytes + cb.Bytes, nil
		})
		// A source node that cannot pair is not the check's failure: the
		// caller reads both sides separately then.
		if srcErr != nil && !errors.Is(srcErr, agentapi.ErrNoRecorderCoverage) {
			return struct{}{}, nil
		}
		return struct{}{}, srcErr
	})
	if err != nil {
		return a, b, true, err
	}
	if srcErr != nil {
		if ctx.Err() != nil {
			return a, b, true, ctx.Err()
		}
		return inFlightRead{}, inFlightRead{}, false, nil
	}
	b.rows = own.rows
	listed := map[string]bool{}
	for _, l := range own.listed {
		maps.Copy(listed, l)
	}
	for id := range last {
		listed[id] = true
		t, ok := owner[id]
		switch {
		case ok:
		case gone[id]:
			t = tgtRead{}
		default:
			t = last[id]
		}
		if t.present {
			b.rows[id] = t.row
		} else {
			delete(b.rows, id)
		}
	}
	b.listed = []map[string]bool{listed}
	return a, b, true, nil
}

// unionKeys is every key of the sets, sorted.
func unionKeys(sets []map[string]bool) []string {
	u := map[string]bool{}
	for _, s := range sets {
		maps.Copy(u, s)
	}
	return slices.Sorted(maps.Keys(u))
}

// uncovered is the ids of all that some part of a side did not list: that
// part's store was not read for them (a union side's session lives on one
// member, which may be the one that did not list it).
func uncovered(all []string, listed []map[string]bool) []string {
	var out []string
	for _, id := range all {
		for _, l := range listed {
			if !l[id] {
				out = append(out, id)
				break
			}
		}
	}
	return out
}

// mergeByKey replaces the listing's rows of ids with the rows read by key
// (a and b: the ids each side holds); an id neither side holds leaves the
// listing.
func mergeByKey(l *listing, ids []string, a, b map[string]digestRow) {
	for _, id := range ids {
		delete(l.src, id)
		delete(l.tgt, id)
		if r, ok := a[id]; ok {
			l.src[id] = r
		}
		if r, ok := b[id]; ok {
			l.tgt[id] = r
		}
	}
}

// rawCall is one paced and counted call that is not about a side's store
// (a recorder on some node of the check).
func rawCall(ctx context.Context, s *side, call func() (int64, error)) error {
	if s.pace != nil {
		if err := s.pace(ctx); err != nil {
			return err
		}
	}
	s.trips.Add(1)
	n, err := call()
	s.wire.Add(n)
	s.calls.add("recorder", n)
	return err
}

// isNoCoverage: the node side could not leave out the keys in flight.
func isNoCoverage(err error) bool { return errors.Is(err, agentapi.ErrNoRecorderCoverage) }

func msText(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
