package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/erlmcp/migctl/erl/agentapi"
)

// RecorderInfo is what one node's change recorder (migctl_recorder, in the
// migctl_node library on the service's nodes) covers.
type RecorderInfo struct {
	Node    string `json:"node"`
	Running bool   `json:"running"`
	// Since is, per table, the start of the coverage (ms): every change of
	// the table on this node since then is recorded. -1: not covered now
	// (Mnesia stopped, or the table is not there).
	Since map[string]int64 `json:"since,omitempty"`
	// Cleared is, per table, when it was last cleared (ms), or 0.
	Cleared      map[string]int64 `json:"cleared,omitempty"`
	Keys         int64            `json:"keys"`
	MemoryBytes  int64            `json:"memory_bytes"`
	WindowMillis int64            `json:"window_ms"`
	Writes       int64            `json:"writes"`
	Deletes      int64            `json:"deletes"`
	Pruned       int64            `json:"pruned"`
	Error        string           `json:"error,omitempty"`
}

// recorder reads one node's change recorder (Error set when the node
// cannot be read).
func (cl *Cluster) recorder(ctx context.Context, node string) RecorderInfo {
	ri, err := cl.api().RecorderInfo(ctx, node, cl.tables)
	if err != nil {
		return RecorderInfo{Node: node, Error: err.Error()}
	}
	return recorderInfo(node, ri)
}

// recorderInfo is the stub's decode of a node's recorder (from
// recorder_info/1 or from the node's view) as the status and the plan show
// it.
func recorderInfo(node string, r agentapi.Recorder) RecorderInfo {
	return RecorderInfo{Node: node, Running: r.Running, Since: r.Since, Cleared: r.Cleared,
		Keys: r.Keys, MemoryBytes: r.MemoryBytes, WindowMillis: r.WindowMillis,
		Writes: r.Writes, Deletes: r.Deletes, Pruned: r.Pruned}
}

// Change ops as the recorder reports them.
const (
	opWrite  = agentapi.OpWrite
	opDelete = agentapi.OpDelete
)

// change is one key's last recorded change on one node.
type change struct {
	Op     byte   // opWrite or opDelete
	At     int64  // ms, the recording node's clock
	AtUs   int64  // the same time in µs (0: not known, At × 1000 is used)
	Origin string // node of the process that made it
	Node   string // node that recorded it
	// Digest of the row written (keyInfo.Digest of that record); 0 for
	// a delete.
	Digest uint32
}

// explains says whether the recorded change accounts for what the node
// holds: the row it wrote (same digest) or, for a deletion, no row. A copy
// changed behind Mnesia's back, or that lost a write it applied, is not
// explained by its own record.
func (c change) explains(k keyInfo, present bool) bool {
	if c.Op == opDelete {
		return !present
	}
	return present && k.Digest == c.Digest
}

// us is the change's time in µs, what orders changes of two sides: two
// changes a fraction of a millisecond apart (common under traffic, a
// client's write right after another client's deletion was acknowledged
// on the other side) would be equal in ms.
func (c change) us() int64 {
	if c.AtUs != 0 {
		return c.AtUs
	}
	return c.At * 1000
}

// same says whether a and b, recorded on two nodes of one island, are the
// same change: Mnesia reports every commit to each replica's recorder,
// each stamping it when it handles it.
func (a change) same(b change) bool {
	return a.Op == b.Op && a.Digest == b.Digest && a.Origin == b.Origin
}

func (c change) String() string {
	op := "write"
	if c.Op == opDelete {
		op = "delete"
	}
	return fmt.Sprintf("%s at %s (by %s, recorded on %s)", op, msTime(c.At), c.Origin, c.Node)
}

// changes reads the last recorded change of ids on node.
func (cl *Cluster) changes(ctx context.Context, node, tab string, ids []string) (map[string]change, error) {
	out := map[string]change{}
	const chunk = 5000
	for start := 0; start < len(ids); start += chunk {
		cs, err := cl.api().Changes(ctx, node, tab, ids[start:min(start+chunk, len(ids))])
		if err != nil {
			return nil, err
		}
		for id, c := range cs {
			out[id] = change{Op: c.Op, At: c.At, AtUs: c.AtUs, Digest: c.Digest, Origin: c.Origin, Node: node}
		}
	}
	return out, nil
}

// sideEvidence is what the recorders of one island say about some keys of
// one table.
type sideEvidence struct {
	// Since: the earliest coverage start among the island's recorders
	// (ms); -1 when none covers the table. Every change the island made
	// since then reached that recorder (a node records its whole island).
	Since   int64
	Cleared int64
	// Last: each key's latest recorded change among the island's nodes.
	Last map[string]change
	// ByNode: each node's own record of the keys, for the nodes whose
	// recorder was read (a key without a change there has no entry). The
	// merge compares the merge node's record with what it is then.
	ByNode map[string]map[string]change
	// Why says, when Since is -1 or late, which recorders were missing.
	Why string
}

// last is the latest change of id on this side, a clear counting as a
// deletion of every key not written since.
func (s sideEvidence) last(id string) (change, bool) {
	c, ok := s.Last[id]
	if s.Cleared > 0 && (!ok || c.At < s.Cleared) {
		return change{Op: opDelete, At: s.Cleared, AtUs: s.Cleared * 1000, Origin: "clear_table"}, true
	}
	return c, ok
}

// islandEvidence reads the recorders of every node of an island for ids.
func (cl *Cluster) islandEvidence(ctx context.Context, nodes []string, tab string, ids []string) (sideEvidence, error) {
	ev := sideEvidence{Since: -1, Last: map[string]change{}, ByNode: map[string]map[string]change{}}
	infos := make([]RecorderInfo, len(nodes))
	chs := make([]map[string]change, len(nodes))
	errs := make([]error, len(nodes))
	forEach(nodes, func(i int, n string) {
		infos[i] = cl.recorder(ctx, n)
		if infos[i].Error != "" || !infos[i].Running || infos[i].Since[tab] < 0 {
			return
		}
		chs[i], errs[i] = cl.changes(ctx, n, tab, ids)
	})
	if err := errors.Join(errs...); err != nil {
		return ev, err
	}
	var why []string
	for i, ri := range infos {
		switch {
		case ri.Error != "":
			why = append(why, fmt.Sprintf("%s: %s", ri.Node, ri.Error))
			continue
		case !ri.Running:
			why = append(why, fmt.Sprintf("%s: no change recorder (migctl_node not running)", ri.Node))
			continue
		case ri.Since[tab] < 0:
			why = append(why, fmt.Sprintf("%s: recorder not subscribed to %s", ri.Node, tab))
			continue
		}
		if s := ri.Since[tab]; ev.Since < 0 || s < ev.Since {
			ev.Since = s
		}
		ev.Cleared = max(ev.Cleared, ri.Cleared[tab])
		ev.ByNode[ri.Node] = chs[i]
	}
	for _, id := range ids {
		if c, ok := islandLast(ev.ByNode, nodes, id); ok {
			ev.Last[id] = c
		}
	}
	ev.Why = strings.Join(why, "; ")
	return ev, nil
}

// islandLast is the island's latest change of id from its nodes' records
// (byNode, in the order of nodes). Each replica's recorder stamps a commit
// when it handles it: the node that made the change at its commit, before
// the client's call returns, the other replicas when the commit reaches
// their transaction manager, which under load can be milliseconds after
// the client was answered (sym_trans sends the commit and returns). Taken
// from the last of them, a change would look later than a change the
// other side made after it was acknowledged, and win over it. So a record
// is timed by its origin's record when that is the same change (same op,
// digest and origin): the origin's stamp, or, when the origin's record is
// a later change that looks the same (a second deletion), that later
// change's, which is the island's last anyway. A change whose origin has
// no record here (no copy on it) is timed by its earliest record. The
// latest of the island's changes so timed is its last.
func islandLast(byNode map[string]map[string]change, nodes []string, id string) (change, bool) {
	var recs []change
	for _, n := range nodes {
		if c, ok := byNode[n][id]; ok {
			recs = append(recs, c)
		}
	}
	var last change
	found := false
	for _, c := range recs {
		c = originTimed(byNode, recs, id, c)
		if !found || c.us() > last.us() {
			last, found = c, true
		}
	}
	return last, found
}

// originTimed is c, one node's record of id, with the time it is to be
// ordered by (see islandLast): its origin's record when that is the same
// change, else the earliest of recs that is.
func originTimed(byNode map[string]map[string]change, recs []change, id string, c change) change {
	if o, ok := byNode[c.Origin][id]; ok && o.same(c) {
		return o
	}
	for _, o := range recs {
		if o.same(c) && o.us() < c.us() {
			c = o
		}
	}
	return c
}

// evidence is what both sides of one comparison recorded.
type evidence struct {
	W, L sideEvidence
	// Need: the coverage both sides must reach back to (ms) for their
	// records to be complete: before the cut, so that a change applied on
	// one side just before it is recorded too.
	Need int64
	// The islands' nodes: a change whose origin is a node of an island
	// was made by that island (not replicated to it from the other side
	// before the split).
	wNodes, lNodes []string
	// wRep is the winner's node the merge runs on: the decisions carry
	// its record of each key (Decision.WinnerSeen).
	wRep string
}

// seenOn is node's own record of id as this evidence read it, for
// Decision.WinnerSeen and WinnerSeenUs: the time of its last change (ms,
// µs), 0 when it recorded none, nil when its recorder was not read.
func (s sideEvidence) seenOn(node, id string) (ms, us *int64) {
	m, ok := s.ByNode[node]
	if !ok {
		return nil, nil
	}
	var at, atUs int64
	if c, ok := m[id]; ok {
		at, atUs = c.At, c.us()
	}
	return &at, &atUs
}

// madeBy says whether c was made on one of nodes.
func madeBy(c change, ok bool, nodes []string) bool {
	return ok && (contains(nodes, c.Origin) || c.Origin == "clear_table")
}

// complete says whether both sides' records cover everything that can
// make them differ, and if not, why.
func (e *evidence) complete() (bool, string) {
	if e == nil {
		return false, "no change recorders read"
	}
	var why []string
	for _, s := range []struct {
		name string
		ev   sideEvidence
	}{{"winner", e.W}, {"loser", e.L}} {
		switch {
		case s.ev.Since < 0:
			why = append(why, fmt.Sprintf("no recorder covers the %s (%s)", s.name, s.ev.Why))
		case s.ev.Since > e.Need:
			why = append(why, fmt.Sprintf("the %s's records start at %s, after %s (a recorder restarted or Mnesia restarted during the split)",
				s.name, msTime(s.ev.Since), msTime(e.Need)))
		}
	}
	if len(why) > 0 {
		return false, strings.Join(why, "; ")
	}
	return true, fmt.Sprintf("recorded changes on both sides since %s (winner) and %s (loser), before %s",
		msTime(e.W.Since), msTime(e.L.Since), msTime(e.Need))
}

// readEvidence reads both islands' records for the keys that differ.
// wRep is the winner's node the merge will run on (IslandPlan.Rep).
func (cl *Cluster) readEvidence(ctx context.Context, tab string, wNodes, lNodes []string, wRep string, ids []string) (*evidence, error) {
	ev := evidence{wNodes: wNodes, lNodes: lNodes, wRep: wRep}
	var werr, lerr error
	t0 := time.Now()
	forEach([]string{"w", "l"}, func(i int, _ string) {
		if i == 0 {
			ev.W, werr = cl.islandEvidence(ctx, wNodes, tab, ids)
		} else {
			ev.L, lerr = cl.islandEvidence(ctx, lNodes, tab, ids)
		}
	})
	if err := errors.Join(werr, lerr); err != nil {
		return nil, err
	}
	cl.log.Debug("plan: recorded changes read", "table", tab, "keys", len(ids), "winner", len(ev.W.Last), "loser", len(ev.L.Last), "took", time.Since(t0))
	return &ev, nil
}

// differing lists the ids whose rows differ between wk and lk.
func differing(wk, lk map[string]keyInfo) []string {
	var ids []string
	for id, l := range lk {
		if w, ok := wk[id]; !ok || w.Digest != l.Digest {
			ids = append(ids, id)
		}
	}
	for id := range wk {
		if _, ok := lk[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
