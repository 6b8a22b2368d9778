package consistency_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// erlmcp keeps a DETS file per node; the Mnesia table holds them all. The
// union of the nodes' DETS stores agrees with Mnesia, while any one node's
// DETS alone would not, and damage is still found.
func TestUnionOfPerNodeDETS(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_dets"})
	var members []backends.Store
	for i, n := range cl.Names() {
		r := cl.Call(i, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 700, 100+i)
		require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(700)}, r)
		// Each node's sessions into the shared Mnesia table.
		cl.Eval(i, `{atomic, ok} = mnesia:transaction(fun() ->
			[mnesia:write({erlmcp_session, I, S, maps:get(last_accessed, S)}) || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')],
			ok end), ok`, nil)
		s, err := backends.Open(cl.Client(), n, backends.DefaultSpec(backends.KindDETS))
		require.NoError(t, err)
		members = append(members, s)
	}
	union, err := backends.NewUnion(members...)
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[1].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	n, err := union.Count(tctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 2100, n)

	o := consistency.Options{Client: cl.Client()}
	rep, err := consistency.Check(tctx(t), union, tgt, o)
	require.NoError(t, err)
	require.True(t, rep.Clean(), "union vs Mnesia: %+v", rep)
	o.Sample = 300
	rep, err = consistency.Check(tctx(t), union, tgt, o)
	require.NoError(t, err)
	require.True(t, rep.Clean(), "sampled union vs Mnesia: %+v", rep)

	// One node's DETS alone is not the whole store.
	rep, err = consistency.Check(tctx(t), members[0], tgt, consistency.Options{Client: cl.Client()})
	require.NoError(t, err)
	require.False(t, rep.Clean())

	// A session lost from Mnesia is still found through the union.
	id := cl.Eval(2, `dets:first(erlmcp_sessions_dets)`, nil)
	cl.Eval(0, `mnesia:dirty_delete(erlmcp_session, Id)`, map[string]erl.Term{"Id": id})
	rep, err = consistency.Check(tctx(t), union, tgt, consistency.Options{Client: cl.Client()})
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.MissingInTarget)
}
