package consistency_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// The rows a check's first pass over a store keeps (ExcludeChanged.Pass,
// migctl_pass) answer its later sums and listings exactly as a new pass
// over the store would, once the sessions the application changed since
// are left out on both: here sessions are updated, deleted and created
// through erlmcp's store between the first pass and the later ones, and
// every later answer (sums over other ranges, a listing with and without
// times) equals that of a pass made then, for the DETS file and for the
// Mnesia copy on the other node. A pass is not found with another Since
// or digest, nor after the check dropped it.
func TestKeptPassAnswersLikeANewPass(t *testing.T) {
	p := dualWrite(t, 3000)
	ctx := tctx(t)
	c := p.cl.Client()
	node := p.cl.Nodes[0].Name
	b := agentapi.Buckets{C: c}
	dets := agentapi.Store{Kind: "dets", Table: "erlmcp_sessions_dets"}
	const quantum = 120000
	// The seeding copy is older than Since: nothing is left out yet.
	time.Sleep(time.Second)
	since := erl.Int64(p.cl.Eval(0, `erlang:system_time(millisecond)`, nil))
	keep := &agentapi.ExcludeChanged{Table: "erlmcp_session", SinceMs: since, Pass: 4242}
	fresh := &agentapi.ExcludeChanged{Table: "erlmcp_session", SinceMs: since}
	mnesia := agentapi.Store{Kind: "mnesia", Table: "erlmcp_session"}
	mnode := p.cl.Nodes[1].Name
	sumsOn := func(node string, st agentapi.Store, rs []bucketdiff.Range, ex *agentapi.ExcludeChanged, q int64) agentapi.SumsReply {
		t.Helper()
		r, err := b.Sums(ctx, node, st, rs, agentapi.SumOptions{LAQuantum: q, Exclude: ex, ReportMethod: true})
		require.NoError(t, err)
		return r
	}
	sums := func(rs []bucketdiff.Range, ex *agentapi.ExcludeChanged, q int64) agentapi.SumsReply {
		t.Helper()
		return sumsOn(node, dets, rs, ex, q)
	}
	full := bucketdiff.Even(64)
	first := sums(full, keep, quantum)
	require.NotEqual(t, "kept", first.Method, "the first pass reads the file")
	require.Zero(t, first.Excluded)
	info := p.cl.Eval(0, `migctl_pass:info()`, nil).(erl.List)
	require.Len(t, info, 1)
	rows := erl.Int64(info[0].(erl.Map)[erl.Atom("rows")])
	require.EqualValues(t, 3000, rows, "every row of the file is kept")
	t.Logf("kept: %d rows, %d bytes", rows, erl.Int64(info[0].(erl.Map)[erl.Atom("bytes")]))
	// The other store of the check, on the other node: its Mnesia copy.
	require.NotEqual(t, "kept", sumsOn(mnode, mnesia, full, keep, quantum).Method)

	// The application changes sessions (recorded: left out from now on).
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(0, `
		{ok, S1} = erlmcp_session_store:fetch(Id1),
		ok = erlmcp_session_store:store(Id1, S1#{metadata => #{<<"changed">> => true}}),
		ok = erlmcp_session_store:delete(Id2),
		ok = erlmcp_session_store:store(<<"kept-pass-new">>, S1#{id => <<"kept-pass-new">>}),
		W = fun W(0) -> recorder_late;
		        W(K) -> Ch = migctl_recorder:changed_since(erlmcp_session, Since),
		                case [I || I <- [Id1, Id2, <<"kept-pass-new">>], not lists:member(I, Ch)] of
		                    [] -> ok;
		                    _ -> timer:sleep(20), W(K - 1)
		                end
		    end,
		W(250)`,
		map[string]erl.Term{"Id1": []byte(p.ids[1]), "Id2": []byte(p.ids[2]), "Since": since}))

	// A later round: some buckets of the first, each split in four.
	var rs []bucketdiff.Range
	for i := 0; i < 64; i += 3 {
		rs = append(rs, bucketdiff.Range{Span: full[0].Bucket(i), Buckets: 4})
	}
	for _, on := range []struct {
		node string
		st   agentapi.Store
	}{{node, dets}, {mnode, mnesia}} {
		for _, r := range [][]bucketdiff.Range{rs, full, bucketdiff.Even(7)} {
			k, f := sumsOn(on.node, on.st, r, keep, quantum), sumsOn(on.node, on.st, r, fresh, quantum)
			require.Equal(t, "kept", k.Method, "%s: answered from the kept pass", on.st.Kind)
			require.NotEqual(t, "kept", f.Method)
			require.Equal(t, f.Sums, k.Sums, "%s: the kept pass sums as a new pass does", on.st.Kind)
			require.Positive(t, k.Excluded, "the changed sessions are left out")
		}
		// A listing: the ids from the kept pass, their rows as they are now.
		for _, times := range []bool{false, true} {
			k, err := b.Keys(ctx, on.node, on.st, rs, agentapi.KeyOptions{Exclude: keep, Times: times, ReportMethod: true})
			require.NoError(t, err)
			f, err := b.Keys(ctx, on.node, on.st, rs, agentapi.KeyOptions{Exclude: fresh, Times: times, ReportMethod: true})
			require.NoError(t, err)
			require.Equal(t, "kept", k.Method)
			require.NotEqual(t, "kept", f.Method)
			require.NotEmpty(t, k.Keys)
			require.Equal(t, f.Keys, k.Keys, "%s: the listing", on.st.Kind)
		}
	}
	require.NotEqual(t, first.Sums, sums(full, keep, quantum).Sums, "the changed sessions are no longer in the sums")

	// Another Since, another digest: not the same pass (the first reads
	// the file and keeps it under the same token, replacing the first).
	later := &agentapi.ExcludeChanged{Table: "erlmcp_session", SinceMs: since + 1, Pass: 4242}
	require.NotEqual(t, "kept", sums(full, later, quantum).Method)
	require.NotEqual(t, "kept", sums(full, keep, quantum*2).Method)
	require.Equal(t, "kept", sums(full, keep, quantum*2).Method)

	// Dropped at the end of the check: gone, and the node keeps nothing.
	require.NoError(t, b.DropPass(ctx, node, 4242))
	require.Empty(t, p.cl.Eval(0, `migctl_pass:info()`, nil))
	require.NotEqual(t, "kept", sums(full, keep, quantum).Method)
	require.NoError(t, b.DropPass(ctx, node, 4242), "again: nothing kept any more")
	require.Equal(t, "kept", sumsOn(mnode, mnesia, full, keep, quantum).Method, "another node's pass is its own")
	require.NoError(t, b.DropPass(ctx, mnode, 4242))
	require.Empty(t, p.cl.Eval(1, `migctl_pass:info()`, nil))

	// A whole check under no traffic: its later rounds come from the kept
	// pass when a difference sends it past the first round.
	p.eval(t, p.ids[10], corruptTarget+", ok")
	time.Sleep(consistency.DefaultInFlightMargin + time.Second)
	rep, err := consistency.Check(ctx, p.src, p.tgt, p.opts())
	require.NoError(t, err)
	require.True(t, rep.InFlight.Used, rep.InFlight.WhyNot)
	require.Len(t, rep.Differences, 1)
	require.Equal(t, p.ids[10], rep.Differences[0].ID)
	require.GreaterOrEqual(t, rep.InFlight.KeptPasses, int64(2), "the confirming round and the listing")
	require.Empty(t, p.cl.Eval(0, `migctl_pass:info()`, nil), "the check dropped what it kept")
	require.Equal(t, erl.Atom("undefined"), p.cl.Eval(0, `whereis(migctl_pass)`, nil),
		"no process runs agent code after the check (migctl unloads its agent when it closes)")

	// The memory guard: a pass is kept only in a quarter of what the node
	// can still take (128 bytes a row); this Linux host's figure is read.
	guard := p.cl.Eval(0, `{migctl_pass:room(3000, 3000 * 128 * 4), migctl_pass:room(3000, 3000 * 128 * 4 - 1),
	                        migctl_pass:room(3000, undefined), migctl_pass:available()}`, nil).(erl.Tuple)
	require.Equal(t, true, guard[0])
	noRoom := guard[1].(erl.Tuple)
	require.Equal(t, []any{false, int64(3000 * 128), int64(3000*128*4 - 1)},
		[]any{noRoom[0], erl.Int64(noRoom[1]), erl.Int64(noRoom[2])}, "no room: nothing kept")
	require.Equal(t, true, guard[2], "no figure, no guard")
	require.Positive(t, erl.Int64(guard[3]), "MemAvailable or the cgroup's limit is read")
}
