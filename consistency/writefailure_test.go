package consistency_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
)

// A write the hybrid backend makes to DETS and fails to make to Mnesia
// (phase1: the client is told ok) is in no change record of Mnesia, so an
// incremental cycle cannot see it. The backend counts it
// (secondary_write_failures), and an incremental monitor that reads the
// counters (Phases, as `migctl consistency monitor` sets it) makes its
// next cycle a full pass, which reports the session missing from Mnesia.
// Here Mnesia refuses the write because its table is read-only for a
// moment; the load generator keeps running on the other sessions.
func TestIncrementalMonitorFullPassAfterHybridWriteFailure(t *testing.T) {
	p := dualWrite(t, 2000)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	mg, err := migrate.New(migrate.Config{Client: p.cl.Client(), Nodes: p.cl.Names(), Journal: j})
	require.NoError(t, err)
	failures := func(ctx context.Context) (int64, map[string]consistency.NodeMigration, error) {
		st, err := mg.ShowPhase(ctx)
		if err != nil {
			return 0, nil, err
		}
		out := map[string]consistency.NodeMigration{}
		var n int64
		for _, nd := range st.Nodes {
			if nd.Reachable && nd.Installed {
				out[nd.Node] = consistency.NodeMigration{Phase: nd.Phase.String(), Counters: nd.Counters}
				n += nd.Counters["secondary_write_failures"]
			}
		}
		return n, out, nil
	}
	mon, err := consistency.NewMonitor(consistency.MonitorConfig{Source: p.src, Target: p.tgt, Journal: j,
		Incremental: true, Interval: time.Second, CallsPerSecond: 1000,
		Phases: func(ctx context.Context) (map[string]consistency.NodeMigration, error) {
			_, m, err := failures(ctx)
			return m, err
		},
		Check: consistency.Options{Client: p.cl.Client(), RecheckDelay: 300 * time.Millisecond, Rechecks: 6}})
	require.NoError(t, err)
	require.NoError(t, mon.Open(ctx))
	t.Cleanup(func() { _ = mon.Close(context.Background()) })
	startLoadgen(t, p, 200, 1000)

	rep, err := mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "full", rep.Mode)
	require.True(t, rep.Clean(), "%v", rep.Samples)
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode, "nothing failed yet: a cycle")
	require.True(t, rep.Clean(), "%v", rep.Samples)
	before, _, err := failures(ctx)
	require.NoError(t, err)

	// Mnesia refuses writes for a moment: the application's store of a
	// new session reaches DETS only, and is acknowledged.
	const id = "write-failure-probe"
	t.Cleanup(func() {
		p.cl.Eval(0, `_ = mnesia:change_table_access_mode(erlmcp_session, read_write), ok`, nil)
	})
	r := p.cl.Eval(0, `{atomic, ok} = mnesia:change_table_access_mode(erlmcp_session, read_only),
	    Now = erlang:system_time(millisecond),
	    R = erlmcp_session_store:store(Id, #{id => Id, created_at => Now, last_accessed => Now,
	                                         timeout_ms => 86400000, metadata => #{}}),
	    W = fun W(0) -> timeout; W(K) ->
	            case erlmcp_session_backend_hybrid:dual_writes_pending() of
	                0 -> ok;
	                _ -> timer:sleep(20), W(K - 1)
	            end end,
	    Settled = W(500),
	    {atomic, ok} = mnesia:change_table_access_mode(erlmcp_session, read_write),
	    {R, Settled}`, map[string]erl.Term{"Id": []byte(id)})
	require.Equal(t, erl.Tuple{erl.Atom("ok"), erl.Atom("ok")}, r, "{the store acknowledged, the deferred write settled}")
	after, _, err := failures(ctx)
	require.NoError(t, err)
	require.Greater(t, after, before, "the backend counted the failed write to Mnesia")

	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "full", rep.Mode, "a counted write failure makes the next cycle a full pass")
	got := map[string]consistency.Kind{}
	for _, d := range rep.Differences {
		got[d.ID] = d.Kind
	}
	require.Equal(t, consistency.KindMissingInTarget, got[id], "the session that reached DETS only is reported: %v", rep.Samples)
	t.Logf("full pass after %d -> %d write failures: %d difference(s) %v", before, after, len(rep.Differences), got)

	// Counted once: the cycle after is incremental again.
	rep, err = mon.CheckNow(ctx)
	require.NoError(t, err)
	require.Equal(t, "incremental", rep.Mode)
}
