package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestRollbackFromPhase3ToPerNodeDETS: the way back from phase3 on a
// 3-node cluster with clients on every node. erlmcp keeps one DETS file per
// node holding the sessions that node serves; the rollback must give each
// session back to one node (the one that last served it), so that
// afterwards the union of the files agrees with Mnesia, and a later trip
// forward again (phase1, backfill from every node's file) resurrects
// nothing that clients deleted. The old rollback copied every session into
// every node's file: the check found hundreds of differences and the next
// forward backfill brought deleted sessions back.
func TestRollbackFromPhase3ToPerNodeDETS(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 200*time.Second)
	j := newJournal(t)
	m := newMigrator(t, cl, j)

	// 200 sessions on node 1 no load generator touches: some will be
	// served by node 2 in phase3, some deleted through node 3.
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 200, 7).(erl.Tuple)
	require.Equal(t, erl.Atom("ok"), r[0])
	require.EqualValues(t, 200, erl.Int64(r[1]))
	seeded := cl.Eval(0, `lists:sort(dets:select(erlmcp_sessions_dets, [{{'$1', '_'}, [], ['$1']}]))`, nil).(erl.List)
	require.Len(t, seeded, 200)
	moved, deleted := seeded[:50], seeded[50:70]

	startLoad(t, cl, 300, 2000)
	defer closeLoad(cl)
	time.Sleep(2 * time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "rollback test"})
	require.NoError(t, err)
	_, err = m.Backfill(ctx, BackfillOptions{NoThrottle: true})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	time.Sleep(time.Second)
	_, err = m.SetPhase(ctx, Phase3, ChangeOptions{Force: true, Reason: "cut over (test: the read-error gate is not the subject)"})
	require.NoError(t, err)

	// phase3: Mnesia alone; any node may serve any session.
	cl.Eval(1, `[{ok, _} = erlmcp_session_store:fetch(Id) || Id <- Ids], ok`, map[string]erl.Term{"Ids": moved})
	cl.Eval(2, `[ok = erlmcp_session_store:delete(Id) || Id <- Ids], ok`, map[string]erl.Term{"Ids": deleted})
	time.Sleep(3 * time.Second)

	rec, brep, err := m.Rollback(ctx, ChangeOptions{Reason: "way back"}, BackfillOptions{NoThrottle: true})
	require.NoError(t, err)
	require.Equal(t, Phase2, rec.To)
	t.Logf("rollback: %s; reverse backfill %+v", rec.Summary(), brep.Record.Stats)

	// The per-node shape: node 2 now holds the sessions it served, node 1
	// no longer does, nobody holds the deleted ones, and no session is in
	// two files.
	in := func(i int, ids erl.List) int64 {
		return erl.Int64(cl.Eval(i, `length([I || I <- Ids, dets:member(erlmcp_sessions_dets, I)])`,
			map[string]erl.Term{"Ids": ids}))
	}
	require.EqualValues(t, 50, in(1, moved), "sessions served by node 2 in phase3 are in node 2's file")
	require.EqualValues(t, 0, in(0, moved), "... and no longer in node 1's")
	require.EqualValues(t, 0, in(2, moved))
	require.EqualValues(t, 130, in(0, seeded[70:]), "untouched sessions stay on node 1")
	for i := range cl.Nodes {
		require.EqualValues(t, 0, in(i, deleted), "a session deleted in phase3 is in node %d's file", i+1)
	}
	dupes := cl.Eval(0, `Keys = fun(N) -> erpc:call(N, dets, select, [erlmcp_sessions_dets, [{{'$1', '_'}, [], ['$1']}]]) end,
	    All = lists:append([Keys(N) || N <- [node() | nodes()]]),
	    length(All) - length(lists:usort(All))`, nil)
	require.EqualValues(t, 0, erl.Int64(dupes), "sessions held by more than one node's file")

	// The stores agree, checked as an operator would, traffic on.
	var members []backends.Store
	for _, n := range cl.Names() {
		s, err := backends.Open(cl.Client(), n, backends.DefaultSpec(backends.KindDETS))
		require.NoError(t, err)
		members = append(members, s)
	}
	union, err := backends.NewUnion(members...)
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	crep, err := consistency.Check(ctx, union, tgt, consistency.Options{Client: cl.Client()})
	require.NoError(t, err)
	require.True(t, crep.Clean(), "DETS (all nodes) vs Mnesia after the rollback: mismatched %d, missing %d, extra %d",
		crep.Mismatched, crep.MissingInTarget, crep.ExtraInTarget)

	// Further back, then forward again: nothing deleted comes back.
	_, _, err = m.Rollback(ctx, ChangeOptions{Reason: "to phase1"}, BackfillOptions{NoThrottle: true})
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	_, err = m.Backfill(ctx, BackfillOptions{NoThrottle: true})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	time.Sleep(time.Second)
	_, err = m.SetPhase(ctx, Phase3, ChangeOptions{Force: true, Reason: "forward again"})
	require.NoError(t, err)
	time.Sleep(time.Second)

	stats := stopLoad(t, cl)
	v := verifyLoad(t, cl, "{mnesia, erlmcp_session}")
	for i := range cl.Nodes {
		t.Logf("node %d load: %s", i+1, describe(stats[i]))
		t.Logf("node %d verify: %s", i+1, describe(v[i]))
		require.Zero(t, mapInt(v[i], "lost"), "node %d", i+1)
		require.Zero(t, mapInt(v[i], "wrong_value"), "node %d", i+1)
		require.Zero(t, mapInt(v[i], "resurrected"), "node %d", i+1)
		require.Positive(t, mapInt(v[i], "checked"), "node %d", i+1)
	}
	back := cl.Eval(0, `length([I || I <- Ids, mnesia:dirty_read(erlmcp_session, I) =/= []])`,
		map[string]erl.Term{"Ids": deleted})
	require.EqualValues(t, 0, erl.Int64(back), "sessions deleted in phase3 came back after the trip forward")
	kept := cl.Eval(0, `length([I || I <- Ids, mnesia:dirty_read(erlmcp_session, I) =/= []])`,
		map[string]erl.Term{"Ids": seeded[70:]})
	require.EqualValues(t, 130, erl.Int64(kept))
}
