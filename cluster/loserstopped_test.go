package cluster_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestHealRefusesLoserStoppedDuringIt: the loser's Mnesia is stopped by
// someone else after the heal read its changes and before the fence, with
// a write acknowledged in between. The reload would load the winners' copy
// over that write, so the heal refuses before merging or discarding
// anything, and says the way on; taking it (a new plan restarting the
// loser out of band, which keeps its Mnesia directory, then the first
// heal's backup written back) loses nothing the heal had read.
func TestHealRefusesLoserStoppedDuringIt(t *testing.T) {
	d := testkit.StartSSHD(t)
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 0, 1000)
	cl := newCluster(t, tk)
	ctx := tctx(t)
	const l = 2
	loser := tk.Nodes[l]
	tk.Partition([]int{0, 1}, []int{l})
	ids := someIDs(t, tk, l, 2)
	touch(t, tk, l, ids[0], time.Now().UnixMilli()+1000, "split")
	tk.ConnectAll(ctx)
	plan, err := cl.Plan(ctx, cluster.PlanOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{loser.Name}, plan.LoserNodes())

	j := openJournal(t)
	hooked := false
	hook := func(step string) error {
		if step != "heal:after:reconnect" {
			return nil
		}
		hooked = true
		touch(t, tk, l, ids[1], time.Now().UnixMilli()+1000, "late")
		require.Equal(t, erl.Atom("stopped"), tk.Eval(l, `mnesia:stop()`, nil))
		return nil
	}
	rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: j, BackupDir: t.TempDir(), Reason: "loser stopped", StepHook: hook})
	require.True(t, hooked)
	require.ErrorIs(t, err, cluster.ErrLoserStopped)
	t.Log(err)
	require.Contains(t, err.Error(), "--ssh-nodes "+loser.Name)
	require.NotContains(t, err.Error(), "--resume", "a resume would find the islands changed")
	require.False(t, rep.Healed)
	require.Empty(t, rep.Merged, "nothing merged")
	for i := 0; i < 2; i++ {
		_, m := present(t, tk, i, ids[0])
		require.NotEqual(t, "split", m, "winner %d untouched", i)
		_, m = present(t, tk, i, ids[1])
		require.NotEqual(t, "late", m, "winner %d untouched", i)
	}
	var backup string
	for _, b := range rep.Backups {
		if b.Node == loser.Name {
			backup = b.File
		}
	}
	require.NotEmpty(t, backup, "the loser was backed up before its changes were read")

	// The way on, as the error says.
	plan2, err := cl.Plan(ctx, cluster.PlanOptions{OutOfBand: []string{loser.Name}})
	require.NoError(t, err)
	require.Equal(t, []string{loser.Name}, plan2.LoserNodes())
	rep2, err := cl.Execute(ctx, plan2, cluster.ExecuteOptions{Journal: j, BackupDir: t.TempDir(), Reason: "loser out of band",
		OutOfBand: sshRestarter(t, tk, d, loser), OutOfBandNodes: []string{loser.Name}})
	require.NoError(t, err, "%v", rep2)
	require.True(t, rep2.Healed)
	moved, _ := filepath.Glob(filepath.Join(loser.Dir, "mnesia.migctl-*"))
	require.Len(t, moved, 1, "the loser's Mnesia directory, with its late write, is kept")
	res, err := cl.RestoreBackup(ctx, backup, tk.Nodes[0].Name, cluster.RestoreOptions{Journal: j, Reason: "the loser's sessions back"})
	require.NoError(t, err)
	require.Positive(t, res.Result.Written)
	for i := range tk.Nodes {
		ok, m := present(t, tk, i, ids[0])
		require.True(t, ok, tk.Nodes[i].Name)
		require.Equal(t, "split", m, "the loser's write read by the first heal, on %s", tk.Nodes[i].Name)
	}
}
