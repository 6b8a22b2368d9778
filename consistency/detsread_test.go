package consistency_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/testkit"
)

// detsStore is the application's session file, as the checks name it.
var detsStore = agentapi.Store{Kind: "dets", Table: "erlmcp_sessions_dets"}

// startDETS starts one node with the DETS backend holding n seeded
// sessions.
func startDETS(t *testing.T, n int) *testkit.Cluster {
	t.Helper()
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_dets"})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 42)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	return cl
}

// A full check's passes over a DETS file (migctl_buckets sums and keys)
// read the file directly, beside the DETS server (migctl_dets:fold/4).
// They must answer exactly what a pass through the server
// (dets:foldl/3) answers: the same bucket sums byte for byte under every
// digest, the same listing, the same rows that are not sessions.
func TestDETSDirectPassEqualsServerFold(t *testing.T) {
	const n = 50000
	cl := startDETS(t, n)
	ctx := tctx(t)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `dets:insert(erlmcp_sessions_dets,
		[{a, 1}, {b, <<"x">>}, {<<"c">>, not_a_map}, {123, #{id => 123}}, {{k, 1}, #{}}])`, nil))
	b := agentapi.Buckets{C: cl.Client()}
	node := cl.Nodes[0].Name
	quarter := bucketdiff.Space / 4
	ranges := map[string][]bucketdiff.Range{
		"whole":  bucketdiff.Even(4096),
		"ranges": {{Span: bucketdiff.Span{Lo: 0, Hi: quarter}, Buckets: 100}, {Span: bucketdiff.Span{Lo: 2 * quarter, Hi: 3*quarter + 12345}, Buckets: 7}},
	}
	for name, rs := range ranges {
		for _, o := range []agentapi.SumOptions{{}, {Digest: agentapi.DigestRecord}, {LAQuantum: 60000, MaxWritten: true}} {
			o.ReportMethod = true
			direct, err := b.Sums(ctx, node, detsStore, rs, o)
			require.NoError(t, err)
			o.DETSRead = agentapi.DETSReadServer
			server, err := b.Sums(ctx, node, detsStore, rs, o)
			require.NoError(t, err)
			require.Equal(t, "raw", direct.Method, "%s %+v", name, o)
			require.Equal(t, "server", server.Method)
			require.Equal(t, server.Sums, direct.Sums, "%s %+v", name, o)
			require.Equal(t, server.Size, direct.Size)
			require.Equal(t, server.Odd, direct.Odd)
			require.EqualValues(t, 5, direct.Odd.N)
			if name == "whole" {
				var rows uint64
				for _, s := range direct.Sums {
					rows += s.Count
				}
				require.EqualValues(t, n, rows)
			}
		}
	}
	for _, rs := range ranges {
		ko := agentapi.KeyOptions{ReportMethod: true}
		direct, err := b.Keys(ctx, node, detsStore, rs, ko)
		require.NoError(t, err)
		ko.DETSRead = agentapi.DETSReadServer
		server, err := b.Keys(ctx, node, detsStore, rs, ko)
		require.NoError(t, err)
		require.Equal(t, "raw", direct.Method)
		require.Equal(t, "server", server.Method)
		require.NotEmpty(t, server.Keys)
		require.Equal(t, server.Keys, direct.Keys)
		require.Equal(t, server.Odd, direct.Odd)
	}
}

// A DETS file is a linear hash table: while it grows, keys move from slot
// p to p + M, so a direct pass that read slots while the slot count
// changed could see a key twice or miss it. A writer inserts new keys
// all the time (2,000 a second at most), so that the file keeps growing: a direct pass that fixes
// the table (the default, as dets:foldl/3 does) reads it as it is, a pass
// that does not (raw_unfixed) notices the growth and redoes the pass
// through the server. Either way every key that did not change (the
// seeded ones) is listed as the server lists it once the writer stopped.
func TestDETSDirectPassWhileTheFileGrows(t *testing.T) {
	const n = 30000
	cl := startDETS(t, n)
	ctx := tctx(t)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `Loop = fun Loop(I) ->
			ok = dets:insert(erlmcp_sessions_dets, [{Id, #{id => Id, last_accessed => 0}} ||
				J <- lists:seq(1, 10), Id <- [<<"grow-", (integer_to_binary(I * 10 + J))/binary>>]]),
			timer:sleep(5),
			Loop(I + 1)
		end,
		true = register(migctl_test_grower, spawn(fun() -> Loop(0) end)), ok`, nil))
	stop := func() {
		cl.Eval(0, `case whereis(migctl_test_grower) of
				undefined -> ok;
				P -> R = monitor(process, P), exit(P, kill), receive {'DOWN', R, _, _, _} -> ok end
			end`, nil)
	}
	t.Cleanup(stop)
	next := func() int64 {
		return erl.Int64(cl.Eval(0, `element(2, dets:info(erlmcp_sessions_dets, no_slots))`, nil))
	}
	// Wait until the writer's keys make the file grow.
	n0 := next()
	require.Eventually(t, func() bool { return next() > n0 }, 30*time.Second, 20*time.Millisecond)

	b := agentapi.Buckets{C: cl.Client()}
	node := cl.Nodes[0].Name
	whole := bucketdiff.Even(1)
	during := map[string]agentapi.KeysReply{} // every pass made, all checked below
	last := map[agentapi.DETSRead]string{}
	for _, how := range []agentapi.DETSRead{agentapi.DETSReadRawUnfixed, agentapi.DETSReadAuto} {
		// A raw_unfixed pass redoes only if the file grew while it read
		// it; on a loaded machine a pass can fall between two growths
		// (one CI run: slots 30464 -> 30464), so it is made again, up to
		// 10 times, until one meets a growth.
		for try := 1; ; try++ {
			before := next()
			r, err := b.Keys(ctx, node, detsStore, whole, agentapi.KeyOptions{DETSRead: how, ReportMethod: true})
			require.NoError(t, err)
			t.Logf("%q #%d: %s, %d rows, slots %d -> %d", how, try, r.Method, len(r.Keys), before, next())
			during[fmt.Sprintf("%q #%d", how, try)] = r
			last[how] = r.Method
			if how != agentapi.DETSReadRawUnfixed || r.Method == "redone" || try == 10 {
				break
			}
		}
	}
	require.Equal(t, "redone", last[agentapi.DETSReadRawUnfixed])
	require.Equal(t, "raw", last[agentapi.DETSReadAuto])
	stop()
	after, err := b.Keys(ctx, node, detsStore, whole, agentapi.KeyOptions{DETSRead: agentapi.DETSReadServer})
	require.NoError(t, err)
	seeded := map[string]agentapi.Key{}
	for id, k := range after.Keys {
		if !strings.HasPrefix(id, "grow-") {
			seeded[id] = k
		}
	}
	require.Len(t, seeded, n)
	require.Greater(t, len(after.Keys), n)
	for how, r := range during {
		got := map[string]agentapi.Key{}
		for id, k := range r.Keys {
			if !strings.HasPrefix(id, "grow-") {
				got[id] = k
			}
		}
		require.Equal(t, seeded, got, how)
	}
}

// Reads by key of a DETS file (get_many, of_ids: the rechecks, the keys in
// flight) of a couple of thousand ids, duplicates, absent ids and a row
// that is not a session among them, answer exactly what one dets:lookup
// per key answers, and of_ids' frames equal the listing of the whole
// file. The ids cross several of the DETS requests lookup_many makes
// (256 keys each, dets:lookup_keys/2), so a row lost or repeated at a
// request's edge shows here.
func TestDETSReadsByKey(t *testing.T) {
	const n = 3000
	cl := startDETS(t, n)
	ctx := tctx(t)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `dets:insert(erlmcp_sessions_dets, [{<<"odd">>, not_a_map}, {odd_atom, #{}}])`, nil))
	node := cl.Nodes[0].Name
	all, err := agentapi.Buckets{C: cl.Client()}.Keys(ctx, node, detsStore, bucketdiff.Even(1), agentapi.KeyOptions{})
	require.NoError(t, err)
	require.Len(t, all.Keys, n)
	var ids []string
	for id := range all.Keys {
		if len(ids)%3 == 0 { // every third present id is asked twice
			ids = append(ids, id)
		}
		ids = append(ids, id)
		if len(ids) >= 2200 {
			break
		}
	}
	ids = append(ids, "odd", "absent-1", "absent-2")
	got, err := agentapi.Check{C: cl.Client()}.GetMany(ctx, node, detsStore, ids)
	require.NoError(t, err)
	want := map[string]bool{}
	for _, id := range ids {
		r := cl.Eval(0, `case dets:lookup(erlmcp_sessions_dets, Id) of [{_, S}] when is_map(S) -> true; _ -> false end`,
			map[string]erl.Term{"Id": []byte(id)})
		if r == true {
			want[id] = true
		}
	}
	require.Equal(t, len(want), len(got), "sessions read by key")
	for id := range want {
		require.Contains(t, got, id)
		require.NotEmpty(t, got[id])
	}
	// The listing frames by key equal the listing of the whole file.
	by, err := agentapi.Buckets{C: cl.Client()}.OfIDs(ctx, node, detsStore, ids, 0, agentapi.KeyOptions{})
	require.NoError(t, err)
	require.Len(t, by.Keys, len(want))
	for id, k := range by.Keys {
		require.Equal(t, all.Keys[id], k, id)
	}
}
