package consistency_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// TestRepairFollowsThePhase: repair on a node running the hybrid backend
// writes only into the store the service does not read, with a
// compare-and-set. In phase3 (the service reads Mnesia) it must not copy
// back a session clients deleted in phase3 (still in DETS), nor overwrite
// a phase3 update that kept the same last_accessed with the old DETS copy;
// in phase1 (the service reads DETS) it must not copy into DETS a session
// only Mnesia still holds (its delete there failed).
func TestRepairFollowsThePhase(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_dets}", "{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase1}", "{session_cleanup_interval, infinity}"}})
	ctx := tctx(t)
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 500, 21)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(500)}, r)
	// Mnesia is a copy of DETS, as after a backfill.
	cl.Eval(0, `{atomic, ok} = mnesia:transaction(fun() ->
	    [mnesia:write({erlmcp_session, I, S, 0}) || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')], ok end), ok`, nil)
	ids := cl.Eval(0, `lists:sublist(lists:sort(mnesia:dirty_all_keys(erlmcp_session)), 3)`, nil).(erl.List)
	deleted, updated, extra := ids[0], ids[1], ids[2]
	src, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.DefaultSpec(backends.KindDETS))
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	opts := consistency.RepairOptions{Check: consistency.Options{Client: cl.Client()}, Journal: j, Reason: "test"}
	setPhase := func(p string) {
		r := cl.Eval(0, `[{_, _, V}] = mnesia:dirty_read(migctl_migration, phase),
		    {ok, _} = erlmcp_session_backend_hybrid:set_phase(P, 100, element(3, V)), ok`,
			map[string]erl.Term{"P": erl.Atom(p)})
		require.Equal(t, erl.Atom("ok"), r)
	}
	// state is {in DETS, in Mnesia, DETS marked, Mnesia marked} for an id.
	state := func(id erl.Term) [4]bool {
		r := cl.Eval(0, `D = dets:lookup(erlmcp_sessions_dets, Id), M = mnesia:dirty_read(erlmcp_session, Id),
		    Mk = fun([{_, S}]) -> maps:is_key(<<"mark">>, maps:get(metadata, S)); ([{_, _, S, _}]) -> maps:is_key(<<"mark">>, maps:get(metadata, S)); ([]) -> false end,
		    [D =/= [], M =/= [], Mk(D), Mk(M)]`, map[string]erl.Term{"Id": id}).(erl.List)
		return [4]bool{r[0].(bool), r[1].(bool), r[2].(bool), r[3].(bool)}
	}

	t.Run("phase3", func(t *testing.T) {
		setPhase("phase3")
		// Deleted by a client in phase3: gone from Mnesia only. Updated
		// in phase3 with the same last_accessed: Mnesia only.
		r := cl.Eval(0, `ok = erlmcp_session_store:delete(Del),
		    [{_, S}] = dets:lookup(erlmcp_sessions_dets, Up),
		    ok = erlmcp_session_store:store(Up, S#{metadata => (maps:get(metadata, S))#{<<"mark">> => 1}}), ok`,
			map[string]erl.Term{"Del": deleted, "Up": updated})
		require.Equal(t, erl.Atom("ok"), r)
		require.Equal(t, [4]bool{true, false, false, false}, state(deleted))
		require.Equal(t, [4]bool{true, true, false, true}, state(updated))

		res, err := consistency.Repair(ctx, src, tgt, opts)
		require.NoError(t, err)
		require.NotNil(t, res.Authority)
		require.Equal(t, "phase3", res.Authority.Phase)
		require.Equal(t, [4]bool{true, false, false, false}, state(deleted), "a session deleted in phase3 was copied back into Mnesia")
		require.Equal(t, [4]bool{true, true, true, true}, state(updated), "the phase3 update lost (or not repaired into DETS)")
		// With --delete-extra the deleted session goes from DETS too.
		opts.DeleteExtra = true
		_, err = consistency.Repair(ctx, src, tgt, opts)
		opts.DeleteExtra = false
		require.NoError(t, err)
		require.Equal(t, [4]bool{false, false, false, false}, state(deleted))
		rep, err := consistency.Check(ctx, src, tgt, opts.Check)
		require.NoError(t, err)
		require.True(t, rep.Clean(), "%v", rep.Samples)
	})

	t.Run("phase1", func(t *testing.T) {
		setPhase("phase1")
		// Deleted in phase1 while Mnesia refused the delete: DETS (read)
		// lost it, Mnesia still has it.
		r := cl.Eval(0, `ok = dets:delete(erlmcp_sessions_dets, Id), ok`, map[string]erl.Term{"Id": extra})
		require.Equal(t, erl.Atom("ok"), r)
		require.Equal(t, [4]bool{false, true, false, false}, state(extra))
		res, err := consistency.Repair(ctx, src, tgt, opts)
		require.NoError(t, err)
		require.Len(t, res.Actions, 1)
		require.Equal(t, consistency.Skip, res.Actions[0].Op)
		require.Equal(t, [4]bool{false, true, false, false}, state(extra), "a session deleted in phase1 was copied back into DETS")
	})
}
