package cluster

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl/agentapi"
)

// The rules of the package documentation, at the edges of the keep window:
// split T = 10 000, window from K = 8 000.
func TestClassifyKeepWindow(t *testing.T) {
	lp := LoserPlan{SplitAt: 10000, KeepFrom: 8000}
	k := func(written, la int64, digest uint32) keyInfo {
		return keyInfo{Written: written, Created: 1, LastAccessed: la, Digest: digest}
	}
	wk := map[string]keyInfo{
		"w-old":    k(7999, 7999, 1),   // only on the winner, before the window: the loser deleted it
		"w-edge":   k(8000, 8000, 1),   // only on the winner, in the window: may not have reached the loser
		"w-split":  k(10000, 10000, 1), // only on the winner, written in the split
		"both-new": k(9500, 9500, 1),   // both, loser's near-split write newer
		"both-old": k(5000, 9900, 1),   // both, loser's copy is older than the window
		"same":     k(100, 100, 7),
	}
	lk := map[string]keyInfo{
		"l-old":    k(7999, 7999, 2),
		"l-near":   k(9999, 9999, 2),
		"l-split":  k(10001, 10001, 2),
		"both-new": k(9600, 9700, 2),
		"both-old": k(7000, 9999, 2),
		"same":     k(100, 100, 7),
	}
	classify(&lp, wk, lk)
	act := map[string]string{}
	for _, d := range lp.Decisions {
		act[d.ID] = d.Action
	}
	require.Equal(t, map[string]string{
		"w-old":    ActDelete,
		"l-near":   ActWrite,
		"l-split":  ActWrite,
		"both-new": ActWrite,
	}, act)
	ids := func(cs []KeyChange) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.On+":"+c.ID)
		}
		return out
	}
	require.Equal(t, []string{"loser:l-near", "winner:w-edge"}, ids(lp.KeptNearSplit))
	require.Equal(t, []string{":w-old"}, ids(lp.DeletedOnLoser))
	require.Equal(t, []string{":l-old"}, ids(lp.DeletedOnWinner))
	require.Equal(t, []string{":l-split"}, ids(lp.WrittenOnLoser))
	require.Equal(t, []string{":w-split"}, ids(lp.WrittenOnWinner))

	// A plan journaled by an older migctl has no window: deletions up to T.
	old := LoserPlan{SplitAt: 10000}
	require.Equal(t, int64(10000), old.deleteBefore())
	classify(&old, map[string]keyInfo{"w": k(9999, 9999, 1)}, map[string]keyInfo{})
	require.Equal(t, ActDelete, old.Decisions[0].Action)
}

func TestAutoKeepWindow(t *testing.T) {
	require.Equal(t, "1m17s", autoKeepWindow(60).String(), "OTP's default net_ticktime")
	require.Equal(t, "4.5s", autoKeepWindow(2).String())
}

// The weighing of losing islands against each other (three or more
// islands): per key, only the island with the later change keeps its
// decision; at the same millisecond a row wins over a deletion, then the
// island listed first; an island whose copy equals the winner's (no
// decision) overrules with its record alone.
func TestWeighLosers(t *testing.T) {
	dec := func(id, act string, at int64) Decision {
		return Decision{ID: id, Action: act, Why: "own " + act, Evidence: true, LoserChanged: at}
	}
	rec := func(op byte, at int64) change { return change{Op: op, At: at, Origin: "n"} }
	tp := TablePlan{Table: "t", Losers: []LoserPlan{
		{Island: 1, EvidenceComplete: true, Decisions: []Decision{
			dec("ww", ActWrite, 100), dec("wd", ActWrite, 200), dec("dw", ActDelete, 100),
			dec("eq", ActWrite, 200), dec("tie-wd", ActDelete, 150), dec("tie-ww", ActWrite, 150),
			dec("alone", ActWrite, 50), dec("drop", ActDrop, 500)}},
		{Island: 2, EvidenceComplete: true, Decisions: []Decision{
			dec("ww", ActWrite, 200), dec("wd", ActDelete, 100), dec("dw", ActWrite, 50),
			dec("tie-wd", ActWrite, 150), dec("tie-ww", ActWrite, 150), dec("drop", ActWrite, 400)}},
		{Island: 3, EvidenceComplete: true}, // decided nothing: its copies equal the winner's
		{Island: 4, EvidenceComplete: false, Decisions: []Decision{{ID: "ww", Action: ActWrite, Why: "by times"}}},
	}}
	evs := map[int]sideEvidence{
		1: {Last: map[string]change{}},
		2: {Last: map[string]change{}},
		// Island 3 deleted "eq" last (the winner had deleted it too).
		3: {Last: map[string]change{"eq": rec(opDelete, 300), "ww": rec(opWrite, 10)}},
	}
	weigh := func() map[int]map[string]Decision {
		in, ids := weighPrepare(&tp)
		require.Equal(t, []int{0, 1, 2}, in, "the loser decided from the rows' times does not take part")
		require.Equal(t, []string{"alone", "drop", "dw", "eq", "tie-wd", "tie-ww", "wd", "ww"}, ids)
		ev := make([]sideEvidence, len(in))
		for k, i := range in {
			ev[k] = evs[tp.Losers[i].Island]
		}
		require.Equal(t, 6, overrule(&tp, in, ids, ev))
		out := map[int]map[string]Decision{}
		for _, lp := range tp.Losers {
			out[lp.Island] = map[string]Decision{}
			for _, d := range lp.Decisions {
				out[lp.Island][d.ID] = d
			}
		}
		return out
	}
	for round := range 2 { // weighing again gives the same result
		got := weigh()
		kept := func(island int, id, act string) {
			d := got[island][id]
			require.Equal(t, act, d.Action, "round %d: island %d %s: %s", round, island, id, d.Why)
			require.Nil(t, d.Overruled, "round %d: island %d %s", round, island, id)
		}
		over := func(island int, id, was string, by int, op string, at int64, applied string) {
			d := got[island][id]
			require.Equal(t, ActDrop, d.Action, "round %d: island %d %s", round, island, id)
			require.Equal(t, &Overrule{Was: was, WasWhy: "own " + was, Island: by, Op: op, At: at, Applied: applied}, d.Overruled, "round %d: %s", round, id)
			require.Contains(t, d.Why, "overruled: losing island")
		}
		over(1, "ww", ActWrite, 2, "write", 200, ActWrite)
		kept(2, "ww", ActWrite)
		kept(1, "wd", ActWrite)
		over(2, "wd", ActDelete, 1, "write", 200, ActWrite)
		kept(1, "dw", ActDelete)
		over(2, "dw", ActWrite, 1, "delete", 100, ActDelete)
		over(1, "eq", ActWrite, 3, "delete", 300, "none")
		over(1, "tie-wd", ActDelete, 2, "write", 150, ActWrite) // same ms: the row
		kept(2, "tie-wd", ActWrite)
		kept(1, "tie-ww", ActWrite) // same ms, two rows: the island listed first
		over(2, "tie-ww", ActWrite, 1, "write", 150, ActWrite)
		kept(1, "alone", ActWrite)
		kept(1, "drop", ActDrop) // the winner's change was later than island 1's
		kept(2, "drop", ActWrite)
		kept(4, "ww", ActWrite)
	}

	// One loser decided from complete records: nothing to weigh.
	one := TablePlan{Losers: []LoserPlan{{EvidenceComplete: true, Decisions: []Decision{dec("a", ActWrite, 1)}}, {Decisions: []Decision{dec("a", ActWrite, 2)}}}}
	_, ids := weighPrepare(&one)
	require.Empty(t, ids)
}

// The flake of 2026-12-07 (TestHealUnderTrafficSharedSessions): the
// winner island (n1, n2) deleted a key, acknowledged on n1 at 8107.8 ms;
// the loser (n3) stored it 0.2 ms later. n2's recorder handled the
// replicated commit 1.5 ms after n1's: timed by n2's record the deletion
// looked later and the acknowledged write was lost. One change is timed
// by its earliest record, and the sides are ordered to the µs (two
// changes in one millisecond are not a tie).
func TestEvidenceTimesAChangeByItsFirstRecord(t *testing.T) {
	at := func(us int64) (int64, int64) { return us / 1000, us }
	ch := func(op byte, us int64, origin, node string, dg uint32) change {
		ms, u := at(us)
		return change{Op: op, At: ms, AtUs: u, Origin: origin, Node: node, Digest: dg}
	}
	wNodes, lNodes := []string{"n1", "n2"}, []string{"n3"}
	side := func(nodes []string, recs ...change) sideEvidence {
		s := sideEvidence{Since: 1, Last: map[string]change{}, ByNode: map[string]map[string]change{}}
		for _, n := range nodes {
			s.ByNode[n] = map[string]change{}
		}
		for _, c := range recs {
			s.ByNode[c.Node]["k"] = c
		}
		if c, ok := islandLast(s.ByNode, nodes, "k"); ok {
			s.Last["k"] = c
		}
		return s
	}
	decide := func(w, l sideEvidence, inW, inL bool) (Decision, bool) {
		lp := LoserPlan{SplitAt: 5000, KeepFrom: 4000}
		wk, lk := map[string]keyInfo{}, map[string]keyInfo{}
		if inW {
			wk["k"] = keyInfo{Written: 5000, LastAccessed: 5000, Digest: 11}
		}
		if inL {
			lk["k"] = keyInfo{Written: 8108, LastAccessed: 8108, Digest: 22}
		}
		classifyEvidence(&lp, wk, lk, &evidence{W: w, L: l, wNodes: wNodes, lNodes: lNodes, wRep: "n1"})
		if len(lp.Decisions) == 0 {
			return Decision{}, false
		}
		return lp.Decisions[0], true
	}

	// The flake: n1 deleted at 8107.600, n2 recorded it at 8109.100, n3
	// wrote at 8108.100.
	w := side(wNodes, ch(opDelete, 8107600, "n1", "n1", 0), ch(opDelete, 8109100, "n1", "n2", 0))
	require.Equal(t, int64(8107600), w.Last["k"].us(), "the deletion is timed by n1's record")
	l := side(lNodes, ch(opWrite, 8108100, "n3", "n3", 22))
	d, ok := decide(w, l, false, true)
	require.True(t, ok)
	require.Equal(t, ActWrite, d.Action, d.Why)
	require.Equal(t, int64(8108), d.LoserChanged)
	require.Equal(t, int64(8108100), d.LoserChangedUs)

	// In one millisecond: the winner's write at 8108.300, the loser's at
	// 8108.600. The loser's is later (in ms they were equal and the
	// winner's stood).
	w = side(wNodes, ch(opWrite, 8108300, "n2", "n1", 11), ch(opWrite, 8108300, "n2", "n2", 11))
	l = side(lNodes, ch(opWrite, 8108600, "n3", "n3", 22))
	d, ok = decide(w, l, true, true)
	require.True(t, ok)
	require.Equal(t, ActWrite, d.Action, d.Why)
	// And the other way round: the loser's write first, the winner's
	// deletion 0.3 ms later: the deletion stands (in ms a tie gave the row).
	w = side(wNodes, ch(opDelete, 8108600, "n1", "n1", 0), ch(opDelete, 8108900, "n1", "n2", 0))
	l = side(lNodes, ch(opWrite, 8108300, "n3", "n3", 22))
	d, ok = decide(w, l, false, true)
	require.True(t, ok)
	require.Equal(t, ActDrop, d.Action, d.Why)

	// Different changes on the island's nodes: the later one is the
	// island's last, each timed by its own first record. n2 has not yet
	// applied n1's deletion (8109.000) of the row n2 wrote at 8107.000.
	w = side(wNodes, ch(opDelete, 8109000, "n1", "n1", 0), ch(opWrite, 8107000, "n2", "n2", 11))
	require.Equal(t, opDelete, w.Last["k"].Op)
	require.Equal(t, int64(8109000), w.Last["k"].us())
	d, ok = decide(w, side(lNodes, ch(opWrite, 8108100, "n3", "n3", 22)), false, true)
	require.True(t, ok)
	require.Equal(t, ActDrop, d.Action, d.Why)

	// n1 deleted the key at 8100.000 and again at 8109.000 (having written
	// it between); n2 lags and its last record is the first deletion. The
	// two deletions look the same (op, digest, origin): timed by the
	// origin's record, the island's last is the second, later than the
	// loser's write at 8108.100, and it stands.
	w = side(wNodes, ch(opDelete, 8109000, "n1", "n1", 0), ch(opDelete, 8100400, "n1", "n2", 0))
	require.Equal(t, int64(8109000), w.Last["k"].us())
	d, ok = decide(w, side(lNodes, ch(opWrite, 8108100, "n3", "n3", 22)), false, true)
	require.True(t, ok)
	require.Equal(t, ActDrop, d.Action, d.Why)
	// The origin holds no copy (no record of its own): the earliest record.
	w = side(wNodes, ch(opDelete, 8107900, "n9", "n1", 0), ch(opDelete, 8109100, "n9", "n2", 0))
	require.Equal(t, int64(8107900), w.Last["k"].us())

	// A recorder older than lookup_us (ms only) still orders by ms.
	old := change{Op: opWrite, At: 8108, Origin: "n3", Node: "n3", Digest: 22}
	require.Equal(t, int64(8108000), old.us())
}

// The merge's condition carries the merge node's record in µs; a plan
// written before WinnerSeenUs (ms only) counts a change in the same
// millisecond as seen, as the merge did then.
func TestMergeCondSeenInMicroseconds(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	d := Decision{ID: "k", Evidence: true, WinnerDigest: 7, WinnerSeen: p(8108), WinnerSeenUs: p(8108300)}
	require.Equal(t, agentapi.MergeCond{Evidence: true, WinnerDigest: 7, WinnerSeenUs: 8108300}, mergeCond(d, true))
	d.WinnerSeenUs = nil
	require.Equal(t, int64(8108999), mergeCond(d, true).WinnerSeenUs, "an earlier plan")
	d.WinnerSeen = p(0)
	require.Equal(t, int64(0), mergeCond(d, true).WinnerSeenUs, "no change recorded")
	d.WinnerSeen = nil
	require.Equal(t, int64(-1), mergeCond(d, true).WinnerSeenUs, "record not read")
	require.Equal(t, agentapi.MergeCond{}, mergeCond(Decision{ID: "k"}, true), "not on evidence")
}

// A recorder whose node's clock is ahead of migctl's still reports some
// coverage: 0 is what the alerts read as "not recording".
func TestCoveredSecondsWithTheNodeAhead(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	if got := coveredSeconds(now, 0); got != 0 {
		t.Errorf("not recording: %v, want 0", got)
	}
	if got := coveredSeconds(now, 990_000); got != 10 {
		t.Errorf("10 s of records: %v", got)
	}
	if got := coveredSeconds(now, 1_005_000); got <= 0 {
		t.Errorf("records from a node 5 s ahead of migctl: %v, want > 0", got)
	}
}
