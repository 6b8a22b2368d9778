package cluster_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/testkit"
)

// TestHealKeepsWinnerChangesMadeDuringHeal is the race the history checker
// found under shared sessions, made to happen every time: the plan (and the
// heal's last read, under the fence) decided that the loser's change of a
// key is the later one, and then, before the merge, a client of the
// WINNING side changes that key. That change is later than the loser's, so
// it must stand: the merge must not write the loser's row over it, nor
// apply the loser's deletion. A loser's change the winner did not touch
// is merged as decided.
//
// The winner's changes are made from the heal's step hook after the fence
// step (the last read of the losers' changes) and before the merge, on
// both winner nodes (the merge runs on one of them; the other's changes
// reach it by replication). Two of them leave the winner's row exactly as
// the decision saw it, absent: a delete of a key the winner does not hold,
// and a write then a delete. The row alone cannot tell those from "not
// changed"; the merge node's change record does.
func TestHealKeepsWinnerChangesMadeDuringHeal(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	// The recorders must cover the time before the cut (the plan asks for
	// a quarter of a second before the data's bound, the seed's writes).
	time.Sleep(1100 * time.Millisecond)
	seed(t, tk, 0, 500)
	cl := newCluster(t, tk)
	ctx := tctx(t)
	ids := someIDs(t, tk, 0, 4)
	var (
		rewritten   = ids[0]         // loser rewrites; winner rewrites after the fence
		delThenW    = ids[1]         // loser deletes; winner rewrites after the fence
		delKept     = ids[2]         // loser deletes; winner leaves it: deleted
		rewriteKept = ids[3]         // loser rewrites; winner leaves it: loser's row
		newNoopDel  = "race-noopdel" // created on the loser; winner deletes it (holding no row)
		newABA      = "race-aba"     // created on the loser; winner writes then deletes it
		newKept     = "race-kept"    // created on the loser; winner leaves it: loser's row
	)
	const w0, w1, l = 0, 1, 2
	tk.Partition([]int{w0, w1}, []int{l})
	now := time.Now().UnixMilli()
	touch(t, tk, l, rewritten, now+1000, "l")
	touch(t, tk, l, rewriteKept, now+1000, "l")
	del(t, tk, l, delThenW)
	del(t, tk, l, delKept)
	for _, id := range []string{newNoopDel, newABA, newKept} {
		writeNew(t, tk, l, id, "l")
	}
	tk.ConnectAll(ctx)

	plan, err := cl.Plan(ctx, cluster.PlanOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{tk.Nodes[l].Name}, plan.LoserNodes())
	lp := plan.Tables[0].Losers[0]
	require.True(t, lp.EvidenceComplete, lp.Evidence)
	dec := decisionsByID(lp)
	for id, want := range map[string]string{rewritten: cluster.ActWrite, rewriteKept: cluster.ActWrite,
		delThenW: cluster.ActDelete, delKept: cluster.ActDelete,
		newNoopDel: cluster.ActWrite, newABA: cluster.ActWrite, newKept: cluster.ActWrite} {
		require.Equal(t, want, dec[id].Action, "%s: %s", id, dec[id].Why)
		require.True(t, dec[id].Evidence, id)
		require.NotNil(t, dec[id].WinnerSeen, "%s: the merge node's record was read", id)
	}

	// After the last read of the losers' changes, before the merge: the
	// winner's clients change four of the keys the heal decided for the
	// loser.
	hooked := false
	hook := func(step string) error {
		if step != "heal:after:fence" {
			return nil
		}
		hooked = true
		touch(t, tk, w1, rewritten, time.Now().UnixMilli(), "w")
		touch(t, tk, w0, delThenW, time.Now().UnixMilli(), "w")
		del(t, tk, w1, newNoopDel)
		writeNew(t, tk, w0, newABA, "w")
		del(t, tk, w0, newABA)
		return nil
	}
	rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: openJournal(t), BackupDir: t.TempDir(),
		Reason: "winner changes during the heal", StepHook: hook})
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
	}
	require.NoError(t, err)
	require.True(t, hooked)
	require.True(t, rep.Healed)
	require.Len(t, rep.Merged, 1)
	m := rep.Merged[0]
	changed := slices.Clone(m.WinnerChangedIDs)
	slices.Sort(changed)
	want := []string{rewritten, delThenW, newNoopDel, newABA}
	slices.Sort(want)
	require.Equal(t, want, changed, "the keys the winner changed during the heal, and only those, are reported")
	require.Equal(t, 4, m.WinnerChanged)
	require.GreaterOrEqual(t, m.Written, 2, "rewriteKept and newKept are merged")
	require.GreaterOrEqual(t, m.Deleted, 1, "delKept is deleted")

	for i := range tk.Nodes {
		for id, want := range map[string]string{rewritten: "w", delThenW: "w", rewriteKept: "l", newKept: "l",
			delKept: "", newNoopDel: "", newABA: ""} {
			ok, mark := present(t, tk, i, id)
			if want == "" {
				require.False(t, ok, "%s on %s: deleted (%s)", id, tk.Nodes[i].Name, mark)
				continue
			}
			require.True(t, ok, "%s on %s", id, tk.Nodes[i].Name)
			require.Equal(t, want, mark, "%s on %s", id, tk.Nodes[i].Name)
		}
	}
	vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	for _, r := range vr {
		require.True(t, r.Consistent, r.Text())
	}
}
