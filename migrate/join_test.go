package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestPhaseSurvivesRestartAndJoin: on Mnesia the phase is the cluster's,
// not the config file's: a restarted node and a node that joins later with
// a stale migration_phase in its config both run the cluster's phase.
func TestPhaseSurvivesRestartAndJoin(t *testing.T) {
	ctx := tctx(t, 120*time.Second)
	env := hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, MnesiaNodes: 2})
	for _, n := range cl.Nodes[:2] {
		require.NoError(t, n.StartApp(ctx, "erlmcp_session_backend_hybrid", env...))
	}
	j := newJournal(t)
	m, err := New(Config{Client: cl.Client(), Nodes: cl.Names()[:2], Journal: j, Logger: testLogger()})
	require.NoError(t, err)
	rec, err := m.SetPhase(ctx, Phase1, ChangeOptions{})
	require.NoError(t, err)
	t.Logf("commit on 2 nodes: %.1f ms", rec.CommitMs)

	// Restart node 2 with phase0 in its config.
	n2 := cl.Nodes[1]
	require.NoError(t, n2.Restart(ctx))
	require.NoError(t, n2.StartApp(ctx, "erlmcp_session_backend_hybrid", env...))
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Ready())
	require.Equal(t, Phase1, st.Nodes[1].Phase)

	// Node 3 joins the Mnesia cluster, then starts with phase0 in its config.
	r := cl.Eval(2, `ok = mnesia:start(), {ok, _} = mnesia:change_config(extra_db_nodes, [N1]),
	   {atomic, ok} = mnesia:change_table_copy_type(schema, node(), disc_copies),
	   {atomic, ok} = mnesia:add_table_copy(erlmcp_session, node(), disc_copies), ok`,
		map[string]erl.Term{"N1": erl.Atom(cl.Nodes[0].Name)})
	require.Equal(t, erl.Atom("ok"), r)
	require.NoError(t, cl.Nodes[2].StartApp(ctx, "erlmcp_session_backend_hybrid", env...))
	m3, err := New(Config{Client: cl.Client(), Nodes: cl.Names(), Journal: j, Logger: testLogger()})
	require.NoError(t, err)
	st, err = m3.ShowPhase(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Ready(), "the joined node runs the cluster's phase")
	require.Equal(t, Phase1, st.Nodes[2].Phase)
	// It holds its own replica of the phase table.
	r = cl.Eval(2, `lists:member(node(), mnesia:table_info(migctl_migration, disc_copies))`, nil)
	require.Equal(t, true, r)
	// And it dual-writes.
	r = cl.Eval(2, `S = erlmcp_session_store:new_session(#{}), Id = maps:get(id, S), ok = erlmcp_session_store:store(Id, S),
	   {length(dets:lookup(erlmcp_sessions_dets, Id)), length(mnesia:dirty_read(erlmcp_session, Id))}`, nil)
	require.Equal(t, erl.Tuple{1, 1}, r)
}
