package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/testkit"
)

// A DETS file within the reserve of DETS's 2 GB limit is not held fixed by
// a pass (at the limit OTP's DETS server fails every request and the file
// cannot be repaired in place, and a fixed table reuses no space: see
// migctl_dets). A file at the limit takes minutes to write, so the reserve
// (migctl_node's dets_fix_reserve_bytes) is set above the whole limit
// here: every file is "near" it. The backfill refuses before fixing; a
// backfill under way stops at its next batch when the file grows into the
// reserve; migctl's own passes (a full check's sums, an export) refuse
// too. After each the table is not fixed and the application's calls
// work; with the reserve back to its default the backfill completes. A
// load generator works the store all along.
func TestPassesLeaveADETSNearItsLimit(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 170*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 1500, 11)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(1500)}, r)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "limit test"})
	require.NoError(t, err)
	// Clients keep working the store throughout (new sessions, deletes,
	// fetches), as they would while the file nears its limit.
	startLoad(t, cl, 300, 3000)
	defer closeLoad(cl)
	reserve := func(b int64) {
		t.Helper()
		require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, 0, `application:set_env(migctl_node, dets_fix_reserve_bytes, B)`, map[string]erl.Term{"B": b}))
	}
	unfixedAndServing := func(what string) {
		t.Helper()
		require.Equal(t, false, evalTerm(t, cl, 0, `dets:info(erlmcp_sessions_dets, safe_fixed)`, nil), "%s: the table is let go", what)
		require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, 0, `S = #{id => <<"limit-probe">>, created_at => 1, last_accessed => erlang:system_time(millisecond),
		    timeout_ms => 3600000, metadata => #{}},
		    ok = erlmcp_session_store:store(<<"limit-probe">>, S), {ok, _} = erlmcp_session_store:fetch(<<"limit-probe">>), ok`, nil), what)
	}
	const all = int64(3) << 30 // more than the limit: every file is near it

	reserve(all)
	_, err = m.Backfill(ctx, BackfillOptions{BatchSize: 50, Restart: true, NoThrottle: true})
	require.Error(t, err)
	require.Contains(t, err.Error(), "dets_near_limit")
	t.Logf("refused: %v", err)
	unfixedAndServing("backfill refused")

	// Under way: a slow pass, and the reserve raised after its first calls.
	reserve(0)
	done := make(chan error, 1)
	go func() {
		_, err := m.Backfill(ctx, BackfillOptions{BatchSize: 20, CallBudget: time.Millisecond, RatePerSec: 300, Restart: true, NoThrottle: true})
		done <- err
	}()
	require.Eventually(t, func() bool {
		fixed := evalTerm(t, cl, 0, `dets:info(erlmcp_sessions_dets, safe_fixed)`, nil)
		return fixed != false
	}, 30*time.Second, 20*time.Millisecond, "the pass fixes the table")
	reserve(all)
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the backfill did not stop")
	}
	require.Error(t, err)
	require.Contains(t, err.Error(), "dets_near_limit")
	t.Logf("stopped: %v", err)
	unfixedAndServing("backfill stopped")

	// migctl's own passes over the file.
	node := cl.Nodes[0].Name
	_, err = agentapi.Buckets{C: cl.Client()}.Sums(ctx, node, agentapi.Store{Kind: "dets", Table: "erlmcp_sessions_dets"},
		bucketdiff.Even(16), agentapi.SumOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "dets_near_limit")
	t.Logf("check: %v", err)
	unfixedAndServing("check refused")

	// Default reserve (128 MiB): this small file is far from the limit.
	require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, 0, `application:unset_env(migctl_node, dets_fix_reserve_bytes)`, nil))
	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 50, Restart: true, NoThrottle: true})
	require.NoError(t, err)
	require.GreaterOrEqual(t, rep.Record.Stats.Scanned, int64(1500))
	unfixedAndServing("backfill done")
	for _, st := range stopLoad(t, cl) {
		t.Logf("load: %v", describe(st))
		require.EqualValues(t, 0, erl.Int64(st[erl.Atom("errors")]), "the clients' calls all succeeded while the passes refused and stopped")
	}
}
