package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// errInterrupted stands for a migctl killed inside reload-losers.
var errInterrupted = errors.New("interrupted with the losers stopped")

// interruptedReload runs a 2|1 heal with load generators on every node
// (never paused) and interrupts it inside reload-losers, once the loser's
// Mnesia is stopped and before it starts again. It returns the heal's id,
// the options to resume it with, and the ids of a key the loser rewrote
// and one it deleted during the split.
func interruptedReload(t *testing.T, tk *testkit.Cluster, cl *cluster.Cluster) (string, cluster.ExecuteOptions, [2]string) {
	t.Helper()
	ctx := tctx(t)
	const l = 2
	// The recorders must cover the time before the seed (the plan asks
	// for a quarter of a second before the data's bound): the decisions
	// are then made on evidence.
	time.Sleep(1100 * time.Millisecond)
	seed(t, tk, 0, 1000)
	for i := range tk.Nodes {
		startLoad(t, tk, i, fmt.Sprintf("lg%d", i))
	}
	time.Sleep(300 * time.Millisecond)
	tk.Partition([]int{0, 1}, []int{l})
	// Seeded sessions, not the load generators' (which keep rewriting
	// their own).
	var ids []string
	for _, id := range someIDs(t, tk, l, 100) {
		if !strings.HasPrefix(id, "lg-") && len(ids) < 2 {
			ids = append(ids, id)
		}
	}
	require.Len(t, ids, 2)
	touch(t, tk, l, ids[0], time.Now().UnixMilli()+1000, "split")
	del(t, tk, l, ids[1])
	time.Sleep(time.Second)
	tk.ConnectAll(ctx)
	plan, err := cl.Plan(ctx, cluster.PlanOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{tk.Nodes[l].Name}, plan.LoserNodes())
	require.True(t, plan.Tables[0].Losers[0].EvidenceComplete, plan.Tables[0].Losers[0].Evidence)
	opts := cluster.ExecuteOptions{Journal: openJournal(t), BackupDir: t.TempDir(), Reason: "interrupted reload"}
	cluster.SetAfterStopLosers(cl, func() error { return errInterrupted })
	rep, err := cl.Execute(ctx, plan, opts)
	cluster.SetAfterStopLosers(cl, nil)
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
	}
	require.ErrorIs(t, err, errInterrupted)
	require.Equal(t, erl.Atom("no"), tk.Eval(l, `mnesia:system_info(is_running)`, nil), "the loser's Mnesia was left stopped")
	return rep.ID, opts, [2]string{ids[0], ids[1]}
}

// TestHealResumesInterruptedReload: a heal interrupted inside
// reload-losers (the loser stopped, not started again) is resumed. Its
// islands are no longer the plan's, but every loser the run stopped was
// fenced until then and its changes merged, so the resume finishes the
// reload instead of refusing: the loser loads the winners' copy, with its
// merged changes, and no acknowledged operation of any node's clients is
// lost.
func TestHealResumesInterruptedReload(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	cl := newCluster(t, tk)
	ctx := tctx(t)
	id, opts, keys := interruptedReload(t, tk, cl)

	dry, err := cl.Resume(ctx, id, cluster.ExecuteOptions{Journal: opts.Journal, DryRun: true})
	require.NoError(t, err)
	var todo []string
	for _, s := range dry.Steps {
		todo = append(todo, s.Step)
	}
	require.Equal(t, []string{"reload-losers", "converge", "verify"}, todo, "the merge is not done again")

	rep, err := cl.Resume(ctx, id, opts)
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
	}
	require.NoError(t, err)
	require.True(t, rep.Healed)
	require.Contains(t, stepOf(rep, "reload-losers").Detail, "stopped by the interrupted run")
	time.Sleep(500 * time.Millisecond)
	for i := range tk.Nodes {
		stopLoad(t, tk, i, fmt.Sprintf("lg%d", i))
	}
	for i := range tk.Nodes {
		ok, m := present(t, tk, i, keys[0])
		require.True(t, ok)
		require.Equal(t, "split", m, "the loser's rewrite, merged before the interruption, on %s", tk.Nodes[i].Name)
		ok, _ = present(t, tk, i, keys[1])
		require.False(t, ok, "the loser's delete on %s", tk.Nodes[i].Name)
		v := verifyLoad(t, tk, i, fmt.Sprintf("lg%d", i))
		require.Positive(t, v[0], "operations checked on %s", tk.Nodes[i].Name)
		require.Equal(t, [3]int64{0, 0, 0}, [3]int64{v[1], v[2], v[3]}, "lost, wrong, resurrected on %s", tk.Nodes[i].Name)
	}
	vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	for _, r := range vr {
		require.True(t, r.Consistent, r.Text())
	}
}

// TestHealResumeRefusesLoserStoppedWithoutMark: the same interruption,
// but the loser's mark of the heal's stop is gone (as when its Erlang node
// restarted, or when someone else stopped it): the resume cannot know that
// every write it acknowledged was merged, so it refuses and leaves it
// stopped, its Mnesia directory untouched.
func TestHealResumeRefusesLoserStoppedWithoutMark(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	cl := newCluster(t, tk)
	ctx := tctx(t)
	id, opts, _ := interruptedReload(t, tk, cl)
	require.Equal(t, true, tk.Eval(2, `persistent_term:erase(migctl_reloading)`, nil))
	_, err := cl.Resume(ctx, id, opts)
	require.ErrorIs(t, err, cluster.ErrLoserStopped)
	t.Log(err)
	require.Equal(t, erl.Atom("no"), tk.Eval(2, `mnesia:system_info(is_running)`, nil), "left stopped")
	for i := range tk.Nodes {
		stopLoad(t, tk, i, fmt.Sprintf("lg%d", i))
	}
}

// stepOf is the report's result of step (zero if it did not run).
func stepOf(rep *cluster.HealReport, step string) cluster.StepResult {
	for _, s := range rep.Steps {
		if s.Step == step {
			return s
		}
	}
	return cluster.StepResult{}
}
