package cluster_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/testkit"
)

// TestHealThreeIslandsLaterLoserWins: a five-node cluster split three
// ways (2|2|1), and both losing islands change the same keys during the
// split. The heal's rule is that the later change wins, whichever losing
// island made it: not the one whose merge happens to run first, nor the
// only one whose copy differs from the winner's. Each key is changed in
// both orders (the {2,3} island first, then the {4} island, and the other
// way round), so whichever order the merge takes the losers in, one of
// each pair is a key where the earlier change is applied first.
func TestHealThreeIslandsLaterLoserWins(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 5, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	// The recorders must cover the time before the cut.
	time.Sleep(1100 * time.Millisecond)
	seed(t, tk, 0, 500)
	cl := newCluster(t, tk)
	ctx := tctx(t)
	ids := someIDs(t, tk, 0, 6)
	const w, a, b = 0, 2, 4 // a node of the winner and of each losing island
	type step struct {
		node int
		op   string // "w": rewrite with mark node's island, "d": delete
	}
	cases := []struct {
		name  string
		id    string
		steps []step // in time order, each later than the one before
		want  string // the mark every replica must hold; "" absent
	}{
		{"a writes, then b writes", ids[0], []step{{a, "w"}, {b, "w"}}, "b"},
		{"b writes, then a writes", ids[1], []step{{b, "w"}, {a, "w"}}, "a"},
		{"a writes, then b deletes", ids[2], []step{{a, "w"}, {b, "d"}}, ""},
		{"b writes, then a deletes", ids[3], []step{{b, "w"}, {a, "d"}}, ""},
		// The later change leaves that loser's copy as the winner's (both
		// deleted it): only the other loser's copy differs from the
		// winner's, and its earlier write must not come back.
		{"winner deletes, a writes, then b deletes", ids[4], []step{{w, "d"}, {a, "w"}, {b, "d"}}, ""},
		{"winner deletes, b writes, then a deletes", ids[5], []step{{w, "d"}, {b, "w"}, {a, "d"}}, ""},
	}
	mark := map[int]string{w: "w", a: "a", b: "b"}

	tk.Partition([]int{0, 1}, []int{2, 3}, []int{4})
	for _, c := range cases {
		for _, s := range c.steps {
			// Each change a few milliseconds after the one before: the
			// recorders' clocks are to the millisecond.
			time.Sleep(20 * time.Millisecond)
			if s.op == "d" {
				del(t, tk, s.node, c.id)
			} else {
				touch(t, tk, s.node, c.id, time.Now().UnixMilli(), mark[s.node])
			}
		}
	}
	tk.ConnectAll(ctx)

	plan, err := cl.Plan(ctx, cluster.PlanOptions{Winner: tk.Nodes[w].Name})
	require.NoError(t, err)
	require.Len(t, plan.Islands, 3, "islands %v", plan.Status.Islands)
	require.Len(t, plan.Tables[0].Losers, 2)
	for _, lp := range plan.Tables[0].Losers {
		require.True(t, lp.EvidenceComplete, lp.Evidence)
		for _, d := range lp.Decisions {
			t.Logf("island %d %v: %s %s: %s", lp.Island, plan.Islands[lp.Island].Nodes, d.ID, d.Action, d.Why)
		}
	}

	// The plan shows which loser's change was overruled, and by which
	// island's later change: the earlier change's decision is a drop
	// that names the later island; the later change is merged as that
	// island decided, or, when its copy is the winner's, not at all.
	islandOf := func(node int) int {
		for i, is := range plan.Islands {
			if slices.Contains(is.Nodes, tk.Nodes[node].Name) {
				return i
			}
		}
		t.Fatalf("%s in no island", tk.Nodes[node].Name)
		return -1
	}
	byIsland := map[int]map[string]cluster.Decision{}
	for _, lp := range plan.Tables[0].Losers {
		byIsland[lp.Island] = decisionsByID(lp)
		require.Equal(t, 3, lp.Overruled(), "island %d: each losing island made the earlier change of three keys", lp.Island)
	}
	for _, c := range cases {
		later, earlier := c.steps[len(c.steps)-1], c.steps[len(c.steps)-2]
		li, ei := islandOf(later.node), islandOf(earlier.node)
		de, ok := byIsland[ei][c.id]
		require.True(t, ok, "%s: island %d decided something", c.name, ei)
		require.Equal(t, cluster.ActDrop, de.Action, "%s: %s", c.name, de.Why)
		require.NotNil(t, de.Overruled, "%s: %s", c.name, de.Why)
		require.Equal(t, li, de.Overruled.Island, c.name)
		require.Equal(t, cluster.ActWrite, de.Overruled.Was, c.name)
		require.Positive(t, de.LoserChanged, c.name)
		require.Greater(t, de.Overruled.At, de.LoserChanged, c.name)
		require.Contains(t, de.Why, "overruled", c.name)
		dl, ok := byIsland[li][c.id]
		if len(c.steps) == 3 {
			require.False(t, ok, "%s: the later island's copy is the winner's: %+v", c.name, dl)
			require.Equal(t, "none", de.Overruled.Applied, c.name)
			continue
		}
		require.True(t, ok, c.name)
		require.Nil(t, dl.Overruled, c.name)
		want := map[string]string{"w": cluster.ActWrite, "d": cluster.ActDelete}[later.op]
		require.Equal(t, want, dl.Action, "%s: %s", c.name, dl.Why)
		require.Equal(t, want, de.Overruled.Applied, c.name)
	}

	rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: openJournal(t), BackupDir: t.TempDir(), Reason: "three islands"})
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
	}
	require.NoError(t, err)
	require.True(t, rep.Healed)

	for _, c := range cases {
		for i := range tk.Nodes {
			ok, m := present(t, tk, i, c.id)
			if c.want == "" {
				require.False(t, ok, "%s: %s on %s: the later change is a deletion (holds %q)", c.name, c.id, tk.Nodes[i].Name, m)
				continue
			}
			require.True(t, ok, "%s: %s on %s", c.name, c.id, tk.Nodes[i].Name)
			require.Equal(t, c.want, m, "%s: %s on %s: the later change", c.name, c.id, tk.Nodes[i].Name)
		}
	}
	vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	for _, r := range vr {
		require.True(t, r.Consistent, r.Text())
	}
}

// TestHealUnderTrafficThreeIslands: the heal under live traffic
// (runTrafficHeal) with five nodes split three ways, 2|2|1, and clients
// on every node also working on the same sessions, so both losing
// islands change the same keys during the split and the heal must keep
// the later of their changes (weighLosers), not the one merged first.
func TestHealUnderTrafficThreeIslands(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 5, islands: [][]int{{0, 1}, {2, 3}, {4}}, rounds: 2, shared: true})
}
