package consistency_test

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// dualWrite is two nodes running erlmcp's store with the hybrid backend in
// phase1 (DETS primary on each node, Mnesia secondary replicated on both),
// n sessions seeded in node 0's DETS file and copied to Mnesia: the state
// a monitor watches for the weeks of phase1.
func dualWrite(t *testing.T, n int) *pair {
	t.Helper()
	cl := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_dets}", "{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase1}", "{session_cleanup_interval, infinity}"}})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 42)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	r = cl.Eval(0, `{atomic, ok} = mnesia:transaction(fun() ->
			[mnesia:write({erlmcp_session, I, S, maps:get(last_accessed, S)}) || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')],
			ok end), ok`, nil)
	require.Equal(t, erl.Atom("ok"), r)
	// The copy is in the change record of node 1 before the monitor starts
	// (as for a monitor started after the backfill, not during it).
	settle(t, cl, n)
	// A cycle reads the record from its cursor minus IncrementalOptions'
	// Overlap (1 s): let the copy fall out of that window, as it would for
	// a monitor started any time after the backfill.
	time.Sleep(1100 * time.Millisecond)
	src, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.DefaultSpec(backends.KindDETS))
	require.NoError(t, err)
	// The change record is read on node 1: its recorder sees node 0's
	// commits as its own.
	tgt, err := backends.Open(cl.Client(), cl.Nodes[1].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	p := &pair{cl: cl, src: src, tgt: tgt}
	ids := cl.Eval(0, `dets:select(erlmcp_sessions_dets, [{{'$1', '_'}, [], ['$1']}])`, nil)
	for _, x := range ids.(erl.List) {
		p.ids = append(p.ids, string(x.([]byte)))
	}
	sort.Strings(p.ids)
	return p
}

// settle waits until node 1's recorder has recorded the n sessions
// copied on node 0 (node 1 applies a remote commit after node 0's
// transaction has returned).
func settle(t *testing.T, cl *testkit.Cluster, n int) {
	t.Helper()
	require.Equal(t, erl.Atom("ok"), cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
			_ = migctl_recorder:lookup(erlmcp_session, []),
			case maps:get(keys, migctl_recorder:info()) >= N of
				true -> ok;
				false -> timer:sleep(20), W(K - 1)
			end end, W(1000)`, map[string]erl.Term{"N": n}))
}

// startLoadgen runs the fixture's load generator on node 0 (through the
// store server, so through the hybrid backend) and stops it at cleanup.
func startLoadgen(t *testing.T, p *pair, rate, keyspace int) (stop func() erl.Map) {
	t.Helper()
	r := p.cl.Eval(0, `element(1, erlmcp_loadgen:start(#{rate => R, keyspace => K, name => lg}))`,
		map[string]erl.Term{"R": rate, "K": keyspace})
	require.Equal(t, erl.Atom("ok"), r)
	var stats erl.Map
	stop = func() erl.Map {
		if stats == nil {
			r := p.cl.Eval(0, `maps:without([last_errors], erlmcp_loadgen:stop(lg))`, nil)
			stats, _ = r.(erl.Map)
		}
		return stats
	}
	t.Cleanup(func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = p.cl.Client().Call(ctx, p.cl.Nodes[0].Name, "erlmcp_loadgen", "close", erl.Atom("lg"))
	})
	return stop
}

func incrMonitor(t *testing.T, p *pair) *consistency.Monitor {
	t.Helper()
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	mon, err := consistency.NewMonitor(consistency.MonitorConfig{Source: p.src, Target: p.tgt, Journal: j,
		Incremental: true, Interval: time.Second, AlertOnMismatch: true, CallsPerSecond: 1000,
		Check: consistency.Options{Client: p.cl.Client(), RecheckDelay: 300 * time.Millisecond}})
	require.NoError(t, err)
	require.NoError(t, mon.Open(context.Background()))
	t.Cleanup(func() { _ = mon.Close(context.Background()) })
	return mon
}

// Several incremental cycles under 1,000 ops/s of real traffic through
// the hybrid backend: each verifies only what changed, none reports a
// difference; the load loses nothing.
func TestIncrementalUnderLoadNoFalseAlarms(t *testing.T) {
	const n = 20000
	p := dualWrite(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mon := incrMonitor(t, p)
	stop := startLoadgen(t, p, 1000, 5000)

	rep, err := mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "full", rep.Mode, "the first cycle has no record to start from: a full pass")
	require.True(t, rep.Clean(), "%v", rep.Samples)
	require.EqualValues(t, 1, mon.State().FullPasses)

	var changed []int64
	for i := 0; i < 6; i++ {
		time.Sleep(time.Second)
		rep, err := mon.CheckNow(ctx)
		require.NoError(t, err)
		require.Equal(t, "incremental", rep.Mode)
		t.Logf("cycle %d: processed %d rechecked %d bytes %d round trips %d in %s", i, rep.Processed, rep.Rechecked, rep.BytesMoved, rep.RoundTrips, rep.Duration)
		require.True(t, rep.Clean(), "false alarm in cycle %d: %v", i, rep.Samples)
		// Only the changes: far fewer than the stores hold.
		require.Less(t, rep.Processed, int64(n/2))
		changed = append(changed, rep.Processed)
	}
	st := mon.State()
	require.EqualValues(t, 6, st.Cycles)
	require.EqualValues(t, 1, st.FullPasses)
	require.EqualValues(t, 0, st.Mismatches)
	stats := stop()
	t.Logf("load: %v; verified per cycle %v", stats, changed)
	require.Greater(t, erl.Int64(stats[erl.Atom("ops")]), int64(2000))
	// The cycles saw the traffic (writes through the hybrid reach Mnesia).
	var sum int64
	for _, c := range changed {
		sum += c
	}
	require.Greater(t, sum, int64(1000))
	v := p.cl.Eval(0, `maps:without([samples], erlmcp_loadgen:verify(lg, {mnesia, erlmcp_session}))`, nil).(erl.Map)
	t.Logf("verify: %v", v)
	require.EqualValues(t, 0, erl.Int64(v[erl.Atom("lost")]))
}

// A real difference made while the load runs (a session the target lost,
// another it holds with different content, one only the target has) is
// reported by the next cycle; a restarted recorder is a gap and the
// monitor falls back to a full pass and says so.
func TestIncrementalFlagsDifferenceWithinOneCycle(t *testing.T) {
	const n = 5000
	p := dualWrite(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mon := incrMonitor(t, p)
	startLoadgen(t, p, 1000, 2000)

	rep, err := mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "full", rep.Mode)
	require.True(t, rep.Clean(), "%v", rep.Samples)
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode)
	require.True(t, rep.Clean(), "%v", rep.Samples)

	// The seeded sessions are not in the load's key space.
	p.eval(t, p.ids[10], corruptTarget+", ok")
	p.eval(t, p.ids[20], deleteTarget+", ok")
	p.eval(t, p.ids[30], extraTarget+", ok")
	// Made before the cycle: node 1 has applied the dirty writes (they
	// reach other replicas asynchronously) and recorded them. A change
	// the record shows at or after a cycle's start is looked at in the
	// next cycle instead.
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
			case length(migctl_recorder:lookup(erlmcp_session, Ids)) of
				3 -> ok;
				_ -> timer:sleep(20), W(K - 1)
			end end, W(500)`, map[string]erl.Term{"Ids": erl.List{[]byte(p.ids[10]), []byte(p.ids[20]), []byte(p.ids[30] + "-extra")}}))
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode)
	t.Logf("after damage: %+v", *rep)
	got := map[string]consistency.Kind{}
	for _, d := range rep.Differences {
		got[d.ID] = d.Kind
	}
	require.Equal(t, map[string]consistency.Kind{
		p.ids[10]: consistency.KindMismatched, p.ids[20]: consistency.KindMissingInTarget,
		p.ids[30] + "-extra": consistency.KindExtraInTarget,
	}, got, "within one cycle: %v", rep.Samples)
	t.Logf("flagged in one cycle: processed %d bytes %d in %s", rep.Processed, rep.BytesMoved, rep.Duration)

	// Reported differences are verified again next cycle (still there:
	// reported again, alerted once).
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode)
	require.Len(t, rep.Differences, 3)

	// The recorder restarts (its supervisor brings it back): the record
	// no longer covers the time since the last cycle.
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(1, `P = whereis(migctl_recorder), exit(P, kill),
		W = fun W(0) -> timeout; W(K) ->
			case catch migctl_recorder:info() of
				#{running := true, tables := [#{subscribed := true}]} -> ok;
				_ -> timer:sleep(50), W(K - 1)
			end end, W(200)`, nil))
	gaps := mon.State().Gaps
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "full", rep.Mode, "a gap falls back to a full pass")
	require.Equal(t, gaps+1, mon.State().Gaps)
	require.Contains(t, mon.State().LastGap, "restarted")
	require.Len(t, rep.Differences, 3, "the full pass sees the same differences")
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode)
}

// A quiet cycle verifies exactly the changed keys plus the carried ids,
// in two round trips (the carried ids go with the record's query), and
// the two sides agree on every digest at first look: the record side's
// (Mnesia) and the other side's (DETS) are the same function of the
// session, so nothing is read as a session.
func TestIncrementalQuietCycle(t *testing.T) {
	const n, changes = 3000, 200
	p := dualWrite(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := consistency.Options{Client: p.cl.Client(), RecheckDelay: 100 * time.Millisecond, Rechecks: 1}
	cur, err := consistency.MarkCursor(ctx, p.src, p.tgt, opts)
	require.NoError(t, err)
	changed := erl.List{}
	for _, id := range p.ids[:changes] {
		changed = append(changed, []byte(id))
	}
	// Both stores, as dual-write does; then wait until node 1 recorded
	// them (a remote dirty write is applied there asynchronously).
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(0, `lists:foreach(fun(Id) ->
			[{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
			S2 = S#{last_accessed => erlang:system_time(millisecond)},
			ok = dets:insert(erlmcp_sessions_dets, {Id, S2}),
			ok = mnesia:dirty_write({erlmcp_session, Id, S2, maps:get(last_accessed, S2)})
		end, Ids)`, map[string]erl.Term{"Ids": changed}))
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
			case length(migctl_recorder:changed_since(erlmcp_session, Since)) >= C of
				true -> ok;
				false -> timer:sleep(20), W(K - 1)
			end end, W(500)`, map[string]erl.Term{"Since": cur.Since, "C": changes}))
	// An id carried over from a previous cycle that did not change since.
	carried := p.ids[n-1]
	cur.Pending = []string{carried, p.ids[0]}
	res, err := consistency.Incremental(ctx, p.src, p.tgt, cur, opts, consistency.IncrementalOptions{Overlap: time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, res.Gap)
	require.Equal(t, changes, res.Changed, "the record lists what changed since the cursor, nothing older")
	require.EqualValues(t, changes+1, res.Report.Processed, "the changed keys and the carried id, each once")
	require.Zero(t, res.Suspects, "a digest computed otherwise on one side makes every key a suspect")
	require.True(t, res.Report.Clean(), "%v", res.Report.Samples)
	require.EqualValues(t, 2, res.Report.RoundTrips, "one call per side")
	require.Empty(t, res.Next.Pending)
	require.Greater(t, res.Next.Since, cur.Since)

	// Nothing changed since: the next cycle verifies at most the changes
	// recorded within the overlap (1 ms) before the last cycle began, not
	// the batch again, and nothing carried.
	res, err = consistency.Incremental(ctx, p.src, p.tgt, res.Next, opts, consistency.IncrementalOptions{Overlap: time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, res.Gap)
	require.Less(t, res.Changed, changes)
	require.EqualValues(t, res.Changed, res.Report.Processed)
	require.True(t, res.Report.Clean(), "%v", res.Report.Samples)
}
