package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/cluster/sshrun"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return c
}

func newCluster(t *testing.T, tk *testkit.Cluster) *cluster.Cluster {
	t.Helper()
	cl, err := cluster.New(tk.Client(), cluster.Options{Nodes: tk.Names(), Buckets: 512})
	require.NoError(t, err)
	return cl
}

func seed(t *testing.T, tk *testkit.Cluster, i, n int) {
	t.Helper()
	r := tk.Call(i, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, n, 42)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
}

func openJournal(t *testing.T) *journal.Journal {
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	return j
}

// someIDs returns n session ids of the table, read on node i.
func someIDs(t *testing.T, tk *testkit.Cluster, i, n int) []string {
	s, err := backends.Open(tk.Client(), tk.Nodes[i].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	b, err := s.Stream(tctx(t), nil, n)
	require.NoError(t, err)
	var ids []string
	for _, r := range b.Rows {
		ids = append(ids, string(r.ID))
	}
	require.Len(t, ids, n)
	return ids
}

// touch rewrites a session on node i (in a transaction, replicated to the
// node's island) with last_accessed = la and a changed metadata value, so
// its digest changes; the record's write time is the node's clock.
func touch(t *testing.T, tk *testkit.Cluster, i int, id string, la int64, mark string) {
	t.Helper()
	r := tk.Eval(i, `mnesia:transaction(fun() ->
	    [{T, K, S, _}] = mnesia:read(erlmcp_session, Id, write),
	    mnesia:write({T, K, S#{last_accessed => LA, metadata => #{<<"mark">> => Mark}}, erlang:system_time(millisecond)})
	  end)`, map[string]erl.Term{"Id": []byte(id), "LA": la, "Mark": []byte(mark)})
	require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}, r, "touch %s on %d", id, i)
}

// touchKeepLA rewrites a session's metadata on node i without changing its
// last_accessed, as erlmcp's store/3 of an updated session can.
func touchKeepLA(t *testing.T, tk *testkit.Cluster, i int, id, mark string) {
	t.Helper()
	r := tk.Eval(i, `mnesia:transaction(fun() ->
	    [{T, K, S, _}] = mnesia:read(erlmcp_session, Id, write),
	    mnesia:write({T, K, S#{metadata => #{<<"mark">> => Mark}}, erlang:system_time(millisecond)})
	  end)`, map[string]erl.Term{"Id": []byte(id), "Mark": []byte(mark)})
	require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}, r, "touch %s on %d", id, i)
}

// stopRecorders stops the change recorders (the migctl_node application)
// on every node, for tests of the heal's rules without evidence.
func stopRecorders(t *testing.T, tk *testkit.Cluster) {
	t.Helper()
	for i := range tk.Nodes {
		require.Equal(t, erl.Atom("ok"), tk.Eval(i, `application:stop(migctl_node)`, nil))
	}
}

func del(t *testing.T, tk *testkit.Cluster, i int, id string) {
	t.Helper()
	r := tk.Eval(i, `mnesia:transaction(fun() -> mnesia:delete({erlmcp_session, Id}) end)`, map[string]erl.Term{"Id": []byte(id)})
	require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}, r)
}

// present tells whether id is in the table as read on node i, and its mark.
func present(t *testing.T, tk *testkit.Cluster, i int, id string) (bool, string) {
	r := tk.Eval(i, `case mnesia:dirty_read(erlmcp_session, Id) of
	    [{_, _, S, _}] -> {true, case maps:get(metadata, S, #{}) of #{<<"mark">> := M} -> M; _ -> <<>> end};
	    [] -> {false, <<>>} end`, map[string]erl.Term{"Id": []byte(id)})
	tt := r.(erl.Tuple)
	return tt[0] == true, string(tt[1].([]byte))
}

func startLoad(t *testing.T, tk *testkit.Cluster, i int, name string) {
	t.Helper()
	r := tk.Eval(i, `case erlmcp_loadgen:start(#{name => N, rate => 300, keyspace => 400}) of {ok, _} -> ok; E -> E end`,
		map[string]erl.Term{"N": erl.Atom(name)})
	require.Equal(t, erl.Atom("ok"), r)
}

func stopLoad(t *testing.T, tk *testkit.Cluster, i int, name string) int64 {
	t.Helper()
	r := tk.Eval(i, `S = erlmcp_loadgen:stop(N), maps:get(ops, S, 0)`, map[string]erl.Term{"N": erl.Atom(name)})
	return toInt(r)
}

// verifyLoad checks every acknowledged operation of a load generator
// against the node's copy: {checked, lost, wrong, resurrected}.
func verifyLoad(t *testing.T, tk *testkit.Cluster, i int, name string) [4]int64 {
	t.Helper()
	r := tk.Eval(i, `R = erlmcp_loadgen:verify(N, {mnesia, erlmcp_session}),
	    {maps:get(checked, R), maps:get(lost, R), maps:get(wrong_value, R), maps:get(resurrected, R)}`,
		map[string]erl.Term{"N": erl.Atom(name)})
	tt := r.(erl.Tuple)
	return [4]int64{toInt(tt[0]), toInt(tt[1]), toInt(tt[2]), toInt(tt[3])}
}

func toInt(t erl.Term) int64 {
	switch v := t.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	}
	return -1
}

func TestStatusAndVerifyReplication(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 0, 3000)
	cl := newCluster(t, tk)
	ctx := tctx(t)

	st, err := cl.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, cluster.Healthy, st.Verdict, st.Problems)
	require.Len(t, st.Islands, 1)
	for _, v := range st.Nodes {
		require.Equal(t, "yes", v.Mnesia)
		require.Len(t, v.RunningDBNodes, 3)
		require.Len(t, v.Tables, 1)
		require.Equal(t, "disc_copies", v.Tables[0].Storage)
		require.EqualValues(t, 3000, v.Tables[0].Size)
		require.Equal(t, v.Node, v.Tables[0].LoadedFrom)
	}

	vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	require.Len(t, vr, 1)
	require.True(t, vr[0].Consistent, vr[0].Text())
	require.Contains(t, vr[0].Text(), "Table size: 3000")
	require.Contains(t, vr[0].Text(), "All nodes consistent")

	// Damage one node's local copy behind Mnesia's back: running_db_nodes
	// still agree, the data does not, and verify-replication notices.
	ids := someIDs(t, tk, 2, 3)
	tk.Eval(2, `ets:delete(erlmcp_session, A),
	    [{T, K, S, W}] = ets:lookup(erlmcp_session, B), ets:insert(erlmcp_session, {T, K, S#{metadata => #{}}, W}),
	    ets:insert(erlmcp_session, {erlmcp_session, <<"only-here">>, #{id => <<"only-here">>, last_accessed => 1}, 1})`,
		map[string]erl.Term{"A": []byte(ids[0]), "B": []byte(ids[1])})
	st, err = cl.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, cluster.Healthy, st.Verdict)
	vr, err = cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	require.False(t, vr[0].Consistent)
	require.Len(t, vr[0].Diffs, 1)
	d := vr[0].Diffs[0]
	require.Equal(t, tk.Nodes[2].Name, d.Node)
	require.Equal(t, 1, d.Missing)
	require.Equal(t, 1, d.Extra)
	require.Equal(t, 1, d.Different)
	require.Contains(t, vr[0].Text(), "differs from")

	// A node down makes the cluster degraded.
	tk.Nodes[2].Kill()
	st, err = cl.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, cluster.Degraded, st.Verdict)
	var buf strings.Builder
	require.NoError(t, cluster.WriteMetrics(&buf, st))
	require.Contains(t, buf.String(), "migctl_mnesia_partitioned 0\n")
	require.Contains(t, buf.String(), "migctl_mnesia_degraded 1\n")
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(buf.String())
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		out, err = exec.Command(promtool, "check", "rules", filepath.Join(testkit.RepoRoot(), "deploy", "prometheus", "migctl-cluster-rules.yml")).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
}

// splitCase is one split-brain scenario.
type splitCase struct {
	nodes   int
	islands [][]int
	pop     bool
	// interrupt stops the heal after reload-losers and resumes it.
	interrupt bool
}

func TestHealSplit3Nodes2v1(t *testing.T) {
	runHeal(t, splitCase{nodes: 3, islands: [][]int{{0, 1}, {2}}, pop: false, interrupt: true})
}

func TestHealSplit3Nodes2v1WithPreventOverlappingPartitions(t *testing.T) {
	runHeal(t, splitCase{nodes: 3, islands: [][]int{{0, 1}, {2}}, pop: true})
}

func TestHealSplit5Nodes2v3(t *testing.T) {
	runHeal(t, splitCase{nodes: 5, islands: [][]int{{0, 1}, {2, 3, 4}}, pop: false})
}

func TestHealSplit5Nodes2v3WithPreventOverlappingPartitions(t *testing.T) {
	runHeal(t, splitCase{nodes: 5, islands: [][]int{{0, 1}, {2, 3, 4}}, pop: true})
}

func runHeal(t *testing.T, sc splitCase) {
	tk := testkit.Start(t, testkit.Options{Nodes: sc.nodes, Mnesia: true, Backend: "erlmcp_session_mnesia",
		PreventOverlappingPartitions: sc.pop})
	// The service has run a while before the split: the change recorders'
	// records must reach back before the cut to count as complete.
	time.Sleep(500 * time.Millisecond)
	seed(t, tk, 0, 2000)
	cl := newCluster(t, tk)
	ctx := tctx(t)
	// Islands: the larger one wins.
	win, lose := sc.islands[0], sc.islands[1]
	if len(lose) > len(win) {
		win, lose = lose, win
	}
	w, l := win[0], lose[0]
	ids := someIDs(t, tk, 0, 7)

	// Watch from before the split.
	var mu sync.Mutex
	var reports []cluster.WatchReport
	var events []cluster.Event
	wctx, wcancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = cl.Watch(wctx, cluster.WatchOptions{Interval: 500 * time.Millisecond, OnReport: func(r cluster.WatchReport) {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		}, OnEvent: func(e cluster.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}})
	}()
	t.Cleanup(func() { wcancel(); <-watchDone })
	time.Sleep(300 * time.Millisecond)

	partition(t, tk, sc.islands...)
	st, err := cl.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, cluster.Partitioned, st.Verdict)
	t.Logf("mnesia islands after the split: %v", st.Islands)
	win, lose = indexes(tk, st.Islands[0]), indexes(tk, st.Islands[1])
	w, l = win[0], lose[0]
	now := time.Now().UnixMilli()
	// Writes on both sides during the split: load generators, and
	// conflicts on sessions both sides had.
	startLoad(t, tk, w, "lgwin")
	startLoad(t, tk, l, "lglose")
	del(t, tk, l, ids[0]) // deleted on the loser: the deletion wins
	del(t, tk, w, ids[1]) // deleted on the winner: stays deleted
	// Conflicts are ordered by when each side recorded its change, not by
	// the sessions' last_accessed.
	// (Changes on two sides a few milliseconds apart are concurrent; the
	// test leaves time between the two of a conflict.)
	apart := func() { time.Sleep(30 * time.Millisecond) }
	touch(t, tk, w, ids[2], now+5000, "w") // both wrote; the loser's is later: loser wins
	apart()
	touch(t, tk, l, ids[2], now+1000, "l") //
	touch(t, tk, l, ids[3], now+5000, "l") // both wrote; the winner's is later: winner wins
	apart()
	touch(t, tk, w, ids[3], now+1000, "w") //
	del(t, tk, w, ids[4])                  // deleted on the winner, then written on the loser: write kept
	apart()
	touch(t, tk, l, ids[4], now+2000, "l") //
	touch(t, tk, l, ids[5], now+3000, "l") // written on the loser only
	touchKeepLA(t, tk, l, ids[6], "l")     // an update on the loser that leaves last_accessed as it was (erlmcp's store/3)
	time.Sleep(1500 * time.Millisecond)
	stopLoad(t, tk, w, "lgwin")
	stopLoad(t, tk, l, "lglose")

	// Reconnect the islands: Mnesia does not merge, the split stays, and
	// Watch must say so within 2 s.
	mu.Lock()
	before := len(reports)
	mu.Unlock()
	reconnectAt := time.Now()
	for a := range tk.Nodes {
		for b := a + 1; b < len(tk.Nodes); b++ {
			_, _ = tk.Client().Call(ctx, tk.Nodes[a].Name, "net_kernel", "connect_node", erl.Atom(tk.Nodes[b].Name))
		}
	}
	var detected time.Duration
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports[before:] {
			if r.Status.Verdict == cluster.Partitioned {
				for _, s := range r.Status.Splits {
					if s.Connected {
						detected = r.Time.Sub(reconnectAt)
						return true
					}
				}
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond, "watch did not report the reconnected split")
	t.Logf("split reported %v after reconnect", detected)
	require.LessOrEqual(t, detected, 2*time.Second)
	if sc.pop {
		// prevent_overlapping_partitions may have cut links again;
		// the status is partitioned either way.
		st, err := cl.Status(ctx)
		require.NoError(t, err)
		require.Equal(t, cluster.Partitioned, st.Verdict)
	}

	var po cluster.PlanOptions
	tie := len(st.Islands[0]) == len(st.Islands[1])
	if tie {
		// Equal islands: the operator picks (else the latest write would).
		po.Winner = tk.Nodes[w].Name
	}
	plan, err := cl.Plan(ctx, po)
	require.NoError(t, err)
	require.Equal(t, len(st.Islands), len(plan.Islands))
	require.ElementsMatch(t, names(tk, win), plan.WinnerNodes())
	if tie {
		require.Contains(t, plan.WinnerReason, "operator's choice")
	} else {
		require.Contains(t, plan.WinnerReason, "largest island")
	}
	require.Len(t, plan.Tables, 1)
	require.Len(t, plan.Tables[0].Losers, len(st.Islands)-1)
	var lp cluster.LoserPlan
	for _, x := range plan.Tables[0].Losers {
		if slices.Contains(plan.Islands[x.Island].Nodes, tk.Nodes[l].Name) {
			lp = x
		}
	}
	dec := map[string]cluster.Decision{}
	for _, d := range lp.Decisions {
		dec[d.ID] = d
	}
	require.Equal(t, cluster.ActDelete, dec[ids[0]].Action, "loser's deletion")
	require.Contains(t, changeIDs(lp.DeletedOnLoser), ids[0])
	require.Contains(t, changeIDs(lp.DeletedOnWinner), ids[1])
	if d, ok := dec[ids[1]]; ok {
		// (A row written just before the split by a node that ended up
		// on the losing side may be listed: its deletion on the winner
		// is the later change, and the loser's row is dropped.)
		require.Equal(t, cluster.ActDrop, d.Action, "deleted on the winner: %s", d.Why)
	}
	require.True(t, lp.EvidenceComplete, lp.Evidence)
	require.Equal(t, cluster.ActWrite, dec[ids[2]].Action, "loser later")
	require.Equal(t, cluster.ActDrop, dec[ids[3]].Action, "winner later")
	require.Equal(t, cluster.ActWrite, dec[ids[4]].Action, "write after delete")
	require.Equal(t, cluster.ActWrite, dec[ids[5]].Action)
	require.Equal(t, cluster.ActWrite, dec[ids[6]].Action, "an update that kept last_accessed: %s", dec[ids[6]].Why)
	require.True(t, lp.EvidenceComplete, lp.Evidence)
	for _, id := range ids[:7] {
		if d, ok := dec[id]; ok {
			require.True(t, d.Evidence, "%s: %s", id, d.Why)
		}
	}
	nw, nd, nx := lp.Counts()
	t.Logf("plan: split at %d (%s), loser wrote %d, deleted %d; winner wrote %d, deleted %d; decisions write %d delete %d drop %d",
		lp.SplitAt, lp.SplitAtSource, len(lp.WrittenOnLoser), len(lp.DeletedOnLoser), len(lp.WrittenOnWinner), len(lp.DeletedOnWinner), nw, nd, nx)
	require.Greater(t, len(lp.WrittenOnLoser), 50, "load generator writes on the loser")
	// The watch ran across the split: its forwarders kept the exact time
	// each node saw the other side's Mnesia go down. (With evidence the
	// split time only dates the report; under prevent_overlapping_partitions
	// the two islands compared can share writes made after the first cut,
	// and the data's bound is then the later one: seen once in CI.)
	t.Logf("split time: %s", lp.SplitAtDetail)
	if lp.SplitAtSource == "mnesia_down" {
		require.Contains(t, lp.SplitAtDetail, "watch's event forwarder")
	} else {
		require.True(t, sc.pop, "without prevent_overlapping_partitions the split time comes from the watch: %s", lp.SplitAtDetail)
	}

	// The loser keeps taking writes after the plan (while the operator
	// reads it): the heal must carry them over too.
	tk.Eval(l, `Now = erlang:system_time(millisecond),
	    {atomic, ok} = mnesia:transaction(fun() -> mnesia:write({erlmcp_session, <<"after-plan">>,
	        #{id => <<"after-plan">>, created_at => Now, last_accessed => Now, timeout_ms => infinity,
	          metadata => #{<<"mark">> => <<"late">>}}, Now}) end), ok`, nil)

	dry, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{DryRun: true})
	require.NoError(t, err)
	require.NotEmpty(t, dry.Steps)

	j := openJournal(t)
	backupDir := t.TempDir()
	healAt := time.Now()
	opts := cluster.ExecuteOptions{Journal: j, BackupDir: backupDir, Reason: "test"}
	if sc.interrupt {
		opts.StopAfter = "fence"
	}
	rep, err := cl.Execute(ctx, plan, opts)
	if sc.interrupt {
		require.ErrorIs(t, err, cluster.ErrStopped)
		hs, lerr := cluster.ListHeals(j)
		require.NoError(t, lerr)
		require.Len(t, hs, 1)
		require.False(t, hs[0].Completed)
		require.Equal(t, []string{"check", "backup", "read-changes", "reconnect", "fence"}, hs[0].Done)
		// Stopped to look, the heal does not hold the loser's writers: a
		// write there commits at once, and the resumed heal (which fences
		// and reads again) carries it over.
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		r, werr := tk.Client().Eval(wctx, tk.Nodes[l].Name, `Now = erlang:system_time(millisecond),
		    mnesia:transaction(fun() -> mnesia:write({erlmcp_session, <<"after-stop">>,
		        #{id => <<"after-stop">>, created_at => Now, last_accessed => Now, timeout_ms => infinity,
		          metadata => #{<<"mark">> => <<"stop">>}}, Now}) end)`, nil)
		wcancel()
		require.NoError(t, werr, "a write on the loser while the heal is stopped")
		require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}, r)
		// A fresh handle, as a new migctl process would have.
		cl2 := newCluster(t, tk)
		rep, err = cl2.Resume(ctx, rep.ID, cluster.ExecuteOptions{Journal: j, Reason: "resume"})
	}
	require.NoError(t, err, "%v", rep.Steps)
	require.True(t, rep.Healed)
	t.Logf("heal took %v: %+v", rep.Duration, rep.Merged)
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail)
	}
	// A full backup of each loser, and the winner's rows the merge touched.
	require.Len(t, rep.Backups, len(plan.LoserNodes())+len(plan.Islands)-1)
	for _, b := range rep.Backups {
		require.FileExists(t, b.File)
		if slices.Contains(plan.LoserNodes(), b.Node) {
			require.Greater(t, b.Count, int64(1000))
		}
	}
	require.Equal(t, cluster.Healthy, rep.Final.Verdict)
	require.True(t, rep.Verify[0].Consistent)

	// The forwarders on the losers resubscribed after their Mnesia restart.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Node == tk.Nodes[l].Name && e.Kind == "subscribed" && e.Time.After(healAt) {
				return true
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond, "no resubscription on %s after its Mnesia restarted", tk.Nodes[l].Name)

	// Every acknowledged write of both sides is there.
	for _, c := range []struct {
		node int
		name string
	}{{w, "lgwin"}, {l, "lglose"}} {
		for _, at := range []int{w, l} {
			_ = at
		}
		v := verifyLoad(t, tk, c.node, c.name)
		t.Logf("%s: checked %d lost %d wrong %d resurrected %d", c.name, v[0], v[1], v[2], v[3])
		require.Greater(t, v[0], int64(50))
		require.Equal(t, [3]int64{0, 0, 0}, [3]int64{v[1], v[2], v[3]}, c.name)
	}
	for i := range tk.Nodes {
		ok, _ := present(t, tk, i, ids[0])
		require.False(t, ok, "deleted on loser")
		ok, _ = present(t, tk, i, ids[1])
		require.False(t, ok, "deleted on winner")
		ok, m := present(t, tk, i, ids[2])
		require.True(t, ok)
		require.Equal(t, "l", m)
		ok, m = present(t, tk, i, ids[3])
		require.True(t, ok)
		require.Equal(t, "w", m)
		ok, m = present(t, tk, i, ids[4])
		require.True(t, ok)
		require.Equal(t, "l", m)
		ok, m = present(t, tk, i, ids[5])
		require.True(t, ok)
		require.Equal(t, "l", m)
		ok, m = present(t, tk, i, ids[6])
		require.True(t, ok)
		require.Equal(t, "l", m, "the loser's update that kept last_accessed")
		ok, m = present(t, tk, i, "after-plan")
		require.True(t, ok, "a loser write made after the plan")
		require.Equal(t, "late", m)
		if sc.interrupt {
			ok, m = present(t, tk, i, "after-stop")
			require.True(t, ok, "a loser write made while the heal was stopped")
			require.Equal(t, "stop", m)
		}
	}

	// The journal has every step, and the backup restores.
	es, err := j.List(cluster.KindHealStep, 0)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(es), 8)
	res, err := cl.RestoreBackup(ctx, rep.Backups[0].File, tk.Nodes[w].Name, cluster.RestoreOptions{Journal: j, Mode: backends.IfAbsent})
	require.NoError(t, err)
	require.Equal(t, rep.Backups[0].Count, res.Count)
	// ids[1] was deleted by the winner; the loser's backup still had it.
	ok, _ := present(t, tk, w, ids[1])
	require.True(t, ok, "restored from the loser's backup")
	// The merge deleted ids[0] from the winners (the loser's deletion)
	// and overwrote ids[2]: the winner's rows as they were before the
	// merge are backed up too, and restore.
	pre := 0
	for _, b := range rep.Backups {
		if !strings.HasPrefix(filepath.Base(b.File), "winner-before-merge-") {
			continue
		}
		pre++
		require.Contains(t, plan.WinnerNodes(), b.Node)
		_, err := cl.RestoreBackup(ctx, b.File, tk.Nodes[w].Name, cluster.RestoreOptions{Journal: j, Mode: backends.IfAbsent})
		require.NoError(t, err)
	}
	require.Equal(t, len(plan.Islands)-1, pre, "one backup of the winner's rows per losing island")
	ok, _ = present(t, tk, w, ids[0])
	require.True(t, ok, "the loser's deletion undone from the winner's pre-merge backup")

	// Nothing of ours is left running on the nodes once Watch stops.
	wcancel()
	<-watchDone
	for i := range tk.Nodes {
		n := tk.Eval(i, `length([P || P <- processes(), {current_function, {migctl_cluster, _, _}} <- [erlang:process_info(P, current_function)]])`, nil)
		require.EqualValues(t, 0, toInt(n), "forwarders left on %s", tk.Nodes[i].Name)
	}
}

// partition cuts the cluster into islands (testkit.Partition copes with
// prevent_overlapping_partitions).
func partition(t *testing.T, tk *testkit.Cluster, islands ...[]int) {
	t.Helper()
	tk.Partition(islands...)
}

func indexes(tk *testkit.Cluster, nodes []string) []int {
	var out []int
	for _, n := range nodes {
		for i, m := range tk.Nodes {
			if m.Name == n {
				out = append(out, i)
			}
		}
	}
	return out
}

func names(tk *testkit.Cluster, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, tk.Nodes[i].Name)
	}
	return out
}

func changeIDs(cs []cluster.KeyChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestAddAndRemoveNode(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 0, 2000)
	extra := testkit.Start(t, testkit.Options{Nodes: 1})
	newNode := extra.Nodes[0].Name
	cl := newCluster(t, tk)
	ctx := tctx(t)
	j := openJournal(t)

	dry, err := cl.AddNode(ctx, newNode, cluster.MembershipOptions{DryRun: true})
	require.NoError(t, err)
	require.NotEmpty(t, dry.Plan)
	st, err := cl.Status(ctx)
	require.NoError(t, err)
	require.Len(t, st.Nodes, 2, "dry run changed nothing")

	// A journal of another cluster is refused before anything changes.
	other := openJournal(t)
	require.NoError(t, other.Bind("mnesia:another-cluster"))
	_, err = cl.AddNode(ctx, newNode, cluster.MembershipOptions{Journal: other})
	require.ErrorIs(t, err, journal.ErrOtherCluster)

	rep, err := cl.AddNode(ctx, newNode, cluster.MembershipOptions{Journal: j, Reason: "scale out"})
	require.NoError(t, err, "%+v", rep)
	require.Equal(t, cluster.Healthy, rep.Final.Verdict)
	require.Len(t, rep.Final.Nodes, 3)
	require.True(t, rep.Verify[0].Consistent, rep.Verify[0].Text())
	for _, n := range rep.Verify[0].Nodes {
		require.EqualValues(t, 2000, n.Size)
	}
	v, _ := rep.Final.Node(newNode)
	require.Equal(t, "disc_copies", v.Tables[0].Storage)

	// Running again is harmless.
	_, err = cl.AddNode(ctx, newNode, cluster.MembershipOptions{Journal: j})
	require.NoError(t, err)

	rm, err := cl.RemoveNode(ctx, newNode, cluster.MembershipOptions{Journal: j, Reason: "scale in"})
	require.NoError(t, err, "%+v", rm)
	for _, v := range rm.Final.Nodes {
		if v.Node != newNode {
			require.NotContains(t, v.DBNodes, newNode)
		}
	}
	require.True(t, rm.Verify[0].Consistent)
	es, err := j.List("", 0)
	require.NoError(t, err)
	require.Len(t, es, 3)
	_ = fmt.Sprint
}

// TestHealOutOfBand heals a 2|1 split where the loser is restarted over a
// real sshd: the configured commands kill its VM, move its Mnesia
// directory aside and start it again empty; it then rejoins from the
// winners and the loser's writes (read out before) are merged.
func TestHealOutOfBand(t *testing.T) { runOutOfBand(t, false) }

// TestHealOutOfBandFrozenLoser: the loser's VM is frozen (SIGSTOP), so
// migctl cannot read it at all; the heal restarts it over SSH all the same
// and the rest of the cluster takes it back. Its writes since the split
// are not merged (they stay in the moved-aside directory), as the plan says.
func TestHealOutOfBandFrozenLoser(t *testing.T) { runOutOfBand(t, true) }

func runOutOfBand(t *testing.T, frozen bool) {
	d := testkit.StartSSHD(t)
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 0, 1000)
	cl, err := cluster.New(tk.Client(), cluster.Options{Nodes: tk.Names(), ViewTimeout: time.Second})
	require.NoError(t, err)
	ctx := tctx(t)
	loser := tk.Nodes[2]
	tk.Partition([]int{0, 1}, []int{2})
	now := time.Now().UnixMilli()
	ids := someIDs(t, tk, 2, 2)
	touch(t, tk, 2, ids[0], now+1000, "oob")
	del(t, tk, 2, ids[1])
	tk.ConnectAll(ctx)

	r := sshRestarter(t, tk, d, loser)

	if frozen {
		loser.Freeze(t)
		_, err := cl.Plan(ctx, cluster.PlanOptions{})
		require.ErrorIs(t, err, cluster.ErrNotPartitioned, "without out-of-band nodes there is nothing to heal in band")
	}
	plan, err := cl.Plan(ctx, cluster.PlanOptions{OutOfBand: []string{loser.Name}})
	require.NoError(t, err)
	require.Equal(t, []string{loser.Name}, plan.LoserNodes())
	require.Equal(t, frozen, plan.Islands[1].Unreachable)
	j := openJournal(t)
	rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: j, BackupDir: t.TempDir(), Reason: "oob",
		OutOfBand: r, OutOfBandNodes: []string{loser.Name}})
	require.NoError(t, err, "%v", rep)
	for _, s := range rep.Steps {
		t.Logf("  %-14s %8v %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail)
	}
	require.True(t, rep.Healed)
	moved, _ := filepath.Glob(filepath.Join(loser.Dir, "mnesia.migctl-*"))
	require.Len(t, moved, 1, "the old Mnesia directory is kept")
	if frozen {
		require.Empty(t, rep.Merged, "nothing could be read from the frozen loser")
		for i := range tk.Nodes {
			_, m := present(t, tk, i, ids[0])
			require.NotEqual(t, "oob", m, "the winner's data everywhere")
			ok, _ := present(t, tk, i, ids[1])
			require.True(t, ok)
		}
		return
	}
	require.Equal(t, 1, rep.Merged[0].Written)
	require.Equal(t, 1, rep.Merged[0].Deleted)
	for i := range tk.Nodes {
		ok, m := present(t, tk, i, ids[0])
		require.True(t, ok)
		require.Equal(t, "oob", m)
		ok, _ = present(t, tk, i, ids[1])
		require.False(t, ok)
	}
}

// sshRestarter is an out-of-band restarter of loser over the test's sshd:
// its commands kill the VM, move its Mnesia directory aside and re-run the
// node exactly as testkit did, detached. The restarted VM (not testkit's
// child) is stopped by its pid when the test ends.
func sshRestarter(t *testing.T, tk *testkit.Cluster, d *testkit.SSHD, loser *testkit.Node) *sshrun.Runner {
	t.Helper()
	var args []string
	for _, a := range loser.Args {
		args = append(args, shellQuote(a))
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(d.KnownHostsLine+"\n"), 0o600))
	cfg := sshrun.Config{KnownHosts: kh, Hosts: []sshrun.Host{{
		Node: loser.Name, Addr: d.Addr, User: d.User, KeyFile: d.ClientKeyFile,
		MnesiaDir: filepath.Join(loser.Dir, "mnesia"),
		Commands: sshrun.Commands{
			Stop:      fmt.Sprintf("kill -9 %d", loser.Pid()),
			MoveAside: "mv {{quote .MnesiaDir}} {{quote .MnesiaDir}}.migctl-{{.Stamp}}",
			Start: fmt.Sprintf("cd %s && HOME=%s ERL_EPMD_PORT=%d erl -detached %s", shellQuote(loser.Dir),
				shellQuote(filepath.Dir(testkit.CookieFile(t))), testkit.EPMDPort(t), strings.Join(args, " ")),
		},
	}}}
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if p, err := tk.Client().Call(c, loser.Name, "os", "getpid"); err == nil {
			if pid, err := strconv.Atoi(fmt.Sprint(p)); err == nil && pid != loser.Pid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return r
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestHealRealNetworkPartition cuts the network between namespaces (not an
// Erlang disconnect): nodes find out by their tick timeout, both sides
// write, the network comes back, and the split is detected, planned and
// healed.
func TestHealRealNetworkPartition(t *testing.T) { runRealNetworkPartition(t, false) }

// TestHealRealNetworkPartitionWithEvidence: the same cut with the change
// recorders running (the migctl_node library, as in a release): the
// writes in flight at the cut are recorded when they commit, later than
// anything the other side did to those keys, and are kept on evidence.
func TestHealRealNetworkPartitionWithEvidence(t *testing.T) { runRealNetworkPartition(t, true) }

func runRealNetworkPartition(t *testing.T, evidence bool) {
	nc := testkit.StartNet(t, 3, true)
	cl, err := cluster.New(nc.Client(), cluster.Options{Nodes: nc.Names()})
	require.NoError(t, err)
	ctx := tctx(t)
	if evidence {
		for i := range nc.Nodes {
			r := nc.Eval(i, `{ok, _} = application:ensure_all_started(migctl_node),
			    W = fun W(0) -> timeout;
			            W(N) -> case migctl_recorder:info() of
			                        #{tables := [#{subscribed := true}]} -> ok;
			                        _ -> timer:sleep(50), W(N - 1)
			                    end
			        end,
			    W(100)`, nil)
			require.Equal(t, erl.Atom("ok"), r, nc.Nodes[i].Name)
		}
		time.Sleep(500 * time.Millisecond) // the records reach back before the cut
	}
	r := nc.Eval(0, `erlmcp_fixture_seed:seed(mnesia, #{}, 500, 7)`, nil)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(500)}, r)
	st, err := cl.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, cluster.Healthy, st.Verdict, st.Problems)

	atomicOK := erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}
	tryWrite := func(i int, id string) erl.Term {
		return nc.Eval(i, `Now = erlang:system_time(millisecond),
		    mnesia:transaction(fun() -> mnesia:write({erlmcp_session, Id,
		        #{id => Id, created_at => Now, last_accessed => Now, timeout_ms => infinity, metadata => #{}}, Now}) end)`,
			map[string]erl.Term{"Id": []byte(id)})
	}
	write := func(i int, id string) {
		require.Equal(t, atomicOK, tryWrite(i, id), "write %s on %s", id, nc.Nodes[i].Name)
	}
	nc.Cut(0, 2)
	nc.Cut(1, 2)
	// Writes made right after the cut, before either side notices it: each
	// waits in Mnesia's commit for the other side, then commits on its own
	// side when the other is declared down. Their timestamps are earlier
	// than that mnesia_down, so by time alone they look older than the split.
	var inWindow sync.WaitGroup
	inWindowIDs := []string{"in-window-on-winner", "", "in-window-on-loser"}
	results := make([]erl.Term, 3)
	for i, id := range inWindowIDs {
		if id != "" {
			inWindow.Add(1)
			go func() { defer inWindow.Done(); results[i] = tryWrite(i, id) }()
		}
	}
	inWindow.Wait()
	require.Equal(t, atomicOK, results[0], "the in-window write on the winner")
	require.Equal(t, atomicOK, results[2], "the in-window write on the loser")
	require.Eventually(t, func() bool {
		st, err := cl.Status(ctx)
		return err == nil && st.Verdict == cluster.Partitioned
	}, 20*time.Second, 200*time.Millisecond, "the cut was not noticed")
	write(0, "written-on-winner")
	write(2, "written-on-loser")
	nc.Mend(0, 2)
	nc.Mend(1, 2)
	nc.Reconnect(ctx)
	// connect_node answers true once the handshake is done on the calling
	// side; the other side lists the peer in nodes() a moment later, so
	// the first Status can still see one direction missing.
	require.Eventually(t, func() bool {
		st, err = cl.Status(ctx)
		return err == nil && len(st.Splits) > 0 && st.Splits[0].Connected
	}, 10*time.Second, 100*time.Millisecond, "reconnected, yet not connected both ways")
	require.Equal(t, cluster.Partitioned, st.Verdict)
	require.True(t, st.Splits[0].Connected, "reconnected yet still split: %+v", st.Splits)

	plan, err := cl.Plan(ctx, cluster.PlanOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{nc.Nodes[2].Name}, plan.LoserNodes())
	lp := plan.Tables[0].Losers[0]
	if evidence {
		require.True(t, lp.EvidenceComplete, lp.Evidence)
		dec := decisionsByID(lp)
		require.Equal(t, cluster.ActWrite, dec["in-window-on-loser"].Action, dec["in-window-on-loser"].Why)
		require.True(t, dec["in-window-on-loser"].Evidence)
		require.NotContains(t, dec, "in-window-on-winner", "the winner's own write stands, nothing to merge")
		require.Empty(t, lp.KeptNearSplit, "no keep window is needed with evidence")
	} else {
		require.False(t, lp.EvidenceComplete)
		var kept []string
		for _, k := range lp.KeptNearSplit {
			kept = append(kept, k.On+":"+k.ID)
		}
		require.ElementsMatch(t, []string{"winner:in-window-on-winner", "loser:in-window-on-loser"}, kept,
			"the writes of the detection window are kept, not taken for deletions (keep window %d ms: %s)", plan.KeepWindowMillis, plan.KeepWindowDetail)
	}
	rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: openJournal(t), BackupDir: t.TempDir(), Reason: "netns"})
	require.NoError(t, err, "%v", rep)
	require.True(t, rep.Healed)
	for i := range nc.Nodes {
		n := nc.Eval(i, `list_to_tuple([length(mnesia:dirty_read(erlmcp_session, K)) || K <- [<<"written-on-winner">>,
		    <<"written-on-loser">>, <<"in-window-on-winner">>, <<"in-window-on-loser">>]])`, nil)
		require.Equal(t, erl.Tuple{1, 1, 1, 1}, n, nc.Nodes[i].Name)
	}
}

// TestResyncDivergedReplica: one node's copy differs from the others while
// Mnesia reports nothing wrong (rows changed, deleted and added behind its
// back, as writes that reached some replicas and not others leave it).
// ResyncNode backs that copy up and reloads it from the others; the backup
// gives back what only that node had.
func TestResyncDivergedReplica(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 0, 1000)
	cl := newCluster(t, tk)
	ctx := tctx(t)
	j := openJournal(t)
	ids := someIDs(t, tk, 0, 2)
	odd := tk.Nodes[2].Name
	require.Equal(t, erl.Atom("ok"), tk.Eval(2, `[{T, K, S, W}] = ets:lookup(erlmcp_session, A),
	    ets:insert(erlmcp_session, {T, K, S#{metadata => #{<<"mark">> => <<"odd">>}}, W}),
	    ets:delete(erlmcp_session, B),
	    ets:insert(erlmcp_session, {erlmcp_session, <<"only-on-2">>, #{id => <<"only-on-2">>, created_at => 1,
	        last_accessed => 1, timeout_ms => infinity, metadata => #{<<"mark">> => <<"odd">>}}, 1}), ok`,
		map[string]erl.Term{"A": []byte(ids[0]), "B": []byte(ids[1])}))
	vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
	require.NoError(t, err)
	require.False(t, vr[0].Consistent)
	require.Equal(t, odd, vr[0].Diffs[0].Node, vr[0].Text())

	_, err = cl.ResyncNode(ctx, "nobody@127.0.0.1", cluster.MembershipOptions{Journal: j, BackupDir: t.TempDir()})
	require.ErrorIs(t, err, cluster.ErrUnknownNode)
	dry, err := cl.ResyncNode(ctx, odd, cluster.MembershipOptions{DryRun: true, BackupDir: "/nowhere"})
	require.NoError(t, err)
	require.Len(t, dry.Plan, 4)
	ok, m := present(t, tk, 2, ids[0])
	require.True(t, ok)
	require.Equal(t, "odd", m, "the dry run changed nothing")

	rep, err := cl.ResyncNode(ctx, odd, cluster.MembershipOptions{Journal: j, BackupDir: t.TempDir(), Reason: "test"})
	require.NoError(t, err, "%+v", rep)
	require.True(t, rep.Verify[0].Consistent, rep.Verify[0].Text())
	ok, m = present(t, tk, 2, ids[0])
	require.True(t, ok)
	require.NotEqual(t, "odd", m)
	ok, _ = present(t, tk, 2, ids[1])
	require.True(t, ok, "the row missing on the odd node is back")
	ok, _ = present(t, tk, 2, "only-on-2")
	require.False(t, ok)

	// What only the odd node had is in its backup.
	require.Len(t, rep.Backups, 1)
	require.EqualValues(t, 1000, rep.Backups[0].Count)
	_, err = cl.RestoreBackup(ctx, rep.Backups[0].File, tk.Nodes[0].Name, cluster.RestoreOptions{Journal: j, Mode: backends.IfAbsent})
	require.NoError(t, err)
	for i := range tk.Nodes {
		ok, _ = present(t, tk, i, "only-on-2")
		require.True(t, ok, tk.Nodes[i].Name)
	}

	// Mnesia stopped on the node (a resync that failed half way): it is
	// started, then resynced.
	require.Equal(t, erl.Atom("stopped"), tk.Eval(2, `mnesia:stop()`, nil))
	rep, err = cl.ResyncNode(ctx, odd, cluster.MembershipOptions{Journal: j, BackupDir: t.TempDir(), Reason: "test"})
	require.NoError(t, err, "%+v", rep)
	require.Equal(t, "Mnesia started on "+odd, rep.Done[0])
	require.Equal(t, cluster.Healthy, rep.Final.Verdict)

	// A split cluster needs a heal, not a resync.
	tk.Partition([]int{0, 1}, []int{2})
	_, err = cl.ResyncNode(ctx, odd, cluster.MembershipOptions{Journal: j, BackupDir: t.TempDir()})
	require.ErrorIs(t, err, cluster.ErrNotHealthy)
	require.ErrorContains(t, err, "cluster heal")
}
