package consistency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
func planInFlight(ctx context.Context, src, tgt *side, o Options, log *slog.Logger) (*agentapi.ExcludeChanged, *InFlight) {
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

// changedKeys is the union over nodes of the keys each node's recorder
// lists as changed in the table since x.SinceMs: every key a pass left
// out anywhere, since a node's list only grows while its coverage holds.
// A node whose record no longer reaches back that far (recorder restarted,
// pruned) is an error wrapping agentapi.ErrNoRecorderCoverage: what it
// left out can no longer be listed.
func changedKeys(ctx context.Context, s *side, nodes []string, x *agentapi.ExcludeChanged) ([]string, error) {
	set := map[string]struct{}{}
	for _, n := range nodes {
		var ids []string
		var known bool
		err := rawCall(ctx, s, func() (int64, error) {
			var err error
			ids, known, err = agentapi.Cluster{C: s.c}.ChangedSince(ctx, n, x.Table, x.SinceMs)
			return idBytes(ids), err
		})
		if err != nil {
			return nil, err
		}
		if !known {
			return nil, fmt.Errorf("changed_since on %s: %w: its record of %s no longer reaches back to %s",
				n, agentapi.ErrNoRecorderCoverage, x.Table, msText(x.SinceMs))
		}
		for _, id := range ids {
			set[id] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// verifyInFlight reads the keys changed since x.SinceMs by key on both
// sides (their digests and last_accessed, as the listing has them) and
// puts them into the listing in place of whatever the rounds listed for
// them, so that they are compared like every listed row: two reads made
// at nearly the same moment, then, for those that differ, the sessions
// and the rechecks. It returns how many keys it read.
func verifyInFlight(ctx context.Context, src, tgt *side, nodes []string, x *agentapi.ExcludeChanged, l *listing) (int64, error) {
	ids, err := changedKeys(ctx, src, nodes, x)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	a, b, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (map[string]digestRow, error) {
		return s.digestsAt(ctx, ids)
	})
	if err != nil {
		return 0, err
	}
	mergeByKey(l, ids, a, b)
	return int64(len(ids)), nil
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
	return err
}

// isNoCoverage: the node side could not leave out the keys in flight.
func isNoCoverage(err error) bool { return errors.Is(err, agentapi.ErrNoRecorderCoverage) }

func msText(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
