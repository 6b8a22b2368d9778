package migrate

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/history"
	"github.com/erlmcp/migctl/testkit"
)

var errKilled = errors.New("simulated SIGKILL")

// TestZeroLossDETSToMnesia is the proof: a 3-node cluster under
// >= 1,000 session operations per second walks phase0 → phase1 → backfill →
// phase2 (10, 50, 100 %) → phase3 → rollback to phase2 → phase3, with
// migctl "killed" once during the backfill and once during a phase change
// (the operation stops dead at that step; a fresh Migrator, as a new migctl
// process would, picks it up from the journal). Then every acknowledged
// write must be in Mnesia with its last acknowledged value, and every
// acknowledged delete absent. The load generators record every operation,
// and the whole history, across every phase change, kill, backfill and
// rollback, must be linearizable per session (package history, porcupine),
// ending with a read of every session in Mnesia.
func TestZeroLossDETSToMnesia(t *testing.T) {
	t0 := time.Now()
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 170*time.Second)
	j := newJournal(t)
	m := newMigrator(t, cl, j)
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Ready())
	require.Equal(t, "mnesia", st.Mode)
	require.Equal(t, Phase0, st.Phase)
	// The store servers are shaped like erlmcp's: they answer no request
	// of the fixture's own (info) and drop every message they do not know,
	// so the backfill below can only go through the backend's fetch.
	for i := range cl.Nodes {
		r := cl.Eval(i, `Pid = whereis(erlmcp_session_store),
		                 {erlmcp_session_server, init, 1} =:= proc_lib:translate_initial_call(Pid)
		                     andalso {error, unknown_request} =:= gen_server:call(Pid, info)`, nil)
		require.Equal(t, true, r, "node %d must run the erlmcp-shaped store server", i)
	}

	// 3 x 500 = 1,500 targeted ops/s; the DETS files fill up in phase0 first.
	startHistoryLoad(t, cl, "lg", 500, 3000, false)
	defer closeLoad(cl)
	time.Sleep(3 * time.Second)

	_, err = m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "zero-loss test"})
	require.NoError(t, err)

	// Backfill, killed after the 2nd batch of node 2.
	var batches atomic.Int32
	m.hook = func(step string) error {
		if strings.HasPrefix(step, "backfill:batch:"+cl.Nodes[1].Name) && batches.Add(1) == 2 {
			return errKilled
		}
		return nil
	}
	_, err = m.Backfill(ctx, BackfillOptions{BatchSize: 100, CallBudget: time.Millisecond, Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000}})
	require.ErrorIs(t, err, errKilled)
	m = newMigrator(t, cl, j) // the rerun
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.ErrorIs(t, err, ErrGate, "phase2 before the backfill completed")
	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 100, Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000}})
	require.NoError(t, err)
	require.True(t, rep.Record.Resumed)
	t.Logf("backfill (resumed): %+v in %.2fs", rep.Record.Stats, rep.Record.Seconds)

	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.NoError(t, err)
	time.Sleep(time.Second)

	// Phase change to 50 %, killed right after the commit transaction and
	// before the journal recorded the result.
	m.hook = func(step string) error {
		if step == "commit:after-first" {
			return errKilled
		}
		return nil
	}
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 50})
	require.ErrorIs(t, err, errKilled)
	m = newMigrator(t, cl, j)
	st, err = m.ShowPhase(ctx)
	require.NoError(t, err)
	require.NotNil(t, st.Pending, "the unfinished change is in the journal")
	rec, err := m.Recover(ctx)
	require.NoError(t, err)
	require.Equal(t, "committed", rec.State)
	t.Logf("recovered: %s", rec.Summary())
	time.Sleep(time.Second)

	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond)
	// A few seconds of phase2 give about a thousand secondary reads: with
	// 0 errors the rate is under 0.01 %, and means nothing yet.
	_, err = m.SetPhase(ctx, Phase3, ChangeOptions{Reason: "too early"})
	require.ErrorIs(t, err, ErrGate)
	require.Contains(t, err.Error(), "not enough reads to judge")
	rec, err = m.SetPhase(ctx, Phase3, ChangeOptions{Reason: "cut-over", MinReads: 200}) // a short test's evidence
	require.NoError(t, err)
	t.Logf("phase3: %s gates=%+v", rec.Summary(), rec.Gates)
	time.Sleep(1500 * time.Millisecond)

	rec, brep, err := m.Rollback(ctx, ChangeOptions{Reason: "rollback drill"}, BackfillOptions{BatchSize: 500, NoThrottle: true})
	require.NoError(t, err)
	require.Equal(t, Phase2, rec.To)
	t.Logf("rollback: %s; reverse backfill %+v", rec.Summary(), brep.Record.Stats)
	time.Sleep(time.Second)
	rec, err = m.SetPhase(ctx, Phase3, ChangeOptions{Reason: "cut-over again", MinReads: 200})
	require.NoError(t, err, "%+v", rec)
	time.Sleep(time.Second)

	stats := stopLoad(t, cl)
	st, _ = m.ShowPhase(ctx)
	for _, n := range st.Nodes {
		t.Logf("counters %s: %s", n.Node, CountersTable(n.Counters))
	}
	v := verifyLoad(t, cl, "{mnesia, erlmcp_session}")
	var ops, errs, checked, lost, wrong, res, anomalies int64
	var secs float64
	for i := range cl.Nodes {
		t.Logf("node %d load: %s", i+1, describe(stats[i]))
		t.Logf("node %d verify: %s", i+1, describe(v[i]))
		if mapInt(v[i], "lost") > 0 {
			t.Logf("journal: %s", dumpJournal(j))
		}
		ops += mapInt(stats[i], "ops")
		errs += mapInt(stats[i], "errors")
		anomalies += mapInt(stats[i], "read_lost") + mapInt(stats[i], "read_wrong") + mapInt(stats[i], "read_resurrected")
		checked += mapInt(v[i], "checked")
		lost += mapInt(v[i], "lost")
		wrong += mapInt(v[i], "wrong_value")
		res += mapInt(v[i], "resurrected")
		if r, ok := stats[i][erl.Atom("rate")].(float64); ok {
			secs += r
		}
	}
	t.Logf("ZERO-LOSS: operations=%d (%.0f ops/s total) acknowledged-checked=%d lost=%d wrong=%d resurrected=%d app-errors=%d read-anomalies=%d, %s",
		ops, secs, checked, lost, wrong, res, errs, anomalies, time.Since(t0).Round(time.Millisecond))
	// 1,500 ops/s are offered; what the nodes achieve depends on the
	// machine (2 shared cores): strict mode demands 1,000 achieved.
	if os.Getenv("MIGCTL_STRICT_RATE") != "" {
		require.GreaterOrEqual(t, secs, 1000.0)
	} else if secs < 1000 {
		t.Logf("WARNING: achieved %.0f ops/s (< 1,000) on this machine; set MIGCTL_STRICT_RATE=1 to fail on that", secs)
	}
	require.Greater(t, checked, int64(1000))
	require.Zero(t, lost)
	require.Zero(t, wrong)
	require.Zero(t, res)
	require.Zero(t, errs)
	require.Zero(t, anomalies)

	hres, _ := cl.CheckHistory(ctx, "{mnesia, erlmcp_session}", history.Options{}, "lg")
	require.True(t, hres.OK(), hres.Summary())
	require.Greater(t, hres.Ops, 1000)
}

// startHistoryLoad starts load generator name on every node with the
// history recorded (shared: every node on the same sessions).
func startHistoryLoad(t *testing.T, cl *testkit.Cluster, name string, rate, keyspace int, shared bool) {
	t.Helper()
	for i := range cl.Nodes {
		r := evalTerm(t, cl, i, `element(1, erlmcp_loadgen:start(#{rate => R, keyspace => K, name => N, history => true, shared => S}))`,
			map[string]erl.Term{"R": rate, "K": keyspace, "N": erl.Atom(name), "S": shared})
		require.Equal(t, erl.Atom("ok"), r)
	}
}

// The checker is not a formality: with the hybrid in phase2 at 100 %
// (every read from Mnesia first), a node-side fault that acknowledges a
// store without writing Mnesia (the test-only app env
// test_fault_skip_phase2_secondary_write of the hybrid) must make the
// history fail, with stale reads; the same cluster without the fault, just
// before, passes.
func TestHistoryCatchesSkippedSecondaryWrite(t *testing.T) {
	env := append(hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase2"), "{migration_percent, 100}")
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	ctx := tctx(t, 60*time.Second)
	run := func(name string, fault bool) *history.Result {
		for i := range cl.Nodes {
			evalTerm(t, cl, i, `application:set_env(migctl_node, test_fault_skip_phase2_secondary_write, F)`,
				map[string]erl.Term{"F": fault})
		}
		startHistoryLoad(t, cl, name, 300, 100, false)
		t.Cleanup(func() {
			for i := range cl.Nodes {
				c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = cl.Client().Call(c, cl.Nodes[i].Name, "erlmcp_loadgen", "close", erl.Atom(name))
				cancel()
			}
		})
		time.Sleep(3 * time.Second)
		for i := range cl.Nodes {
			evalTerm(t, cl, i, `erlmcp_loadgen:stop(N), application:set_env(migctl_node, test_fault_skip_phase2_secondary_write, false)`,
				map[string]erl.Term{"N": erl.Atom(name)})
		}
		res, _ := cl.CheckHistory(ctx, "{mnesia, erlmcp_session}", history.Options{}, name)
		return res
	}
	good := run("clean", false)
	require.True(t, good.OK(), good.Summary())
	bad := run("faulty", true)
	require.False(t, bad.OK(), "the checker must see the skipped secondary writes")
	stale := 0
	for _, f := range bad.Failures {
		if strings.HasPrefix(f.Diagnosis, "stale read") {
			stale++
		}
	}
	t.Logf("with the fault: %d keys failed, %d of them diagnosed as stale reads; visualizations: %d",
		len(bad.Failures), stale, countVisualized(bad))
	require.Positive(t, stale)
	require.Positive(t, countVisualized(bad))
}

func countVisualized(r *history.Result) int {
	n := 0
	for _, f := range r.Failures {
		if f.Visualization != "" {
			n++
		}
	}
	return n
}
