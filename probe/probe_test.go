package probe_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/probe"
	"github.com/erlmcp/migctl/testkit"
)

// A process that keeps scanning the session file holds the node's DETS
// server (as the hybrid's cleaner did at 1.8M sessions); clients' calls
// queue behind it. The probe must say so: the DETS server busy in DETS's
// own code, the store server waiting in a DETS call, and then, with the
// scans stopped, both mostly idle.
func TestProbeFindsWhatHoldsTheDETSServer(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_dets"})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 100000, 42)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(100000)}, r)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `case erlmcp_loadgen:start(#{name => lg, rate => 1000, keyspace => 1000}) of
	    {ok, _} -> ok; E -> E end`, nil))
	t.Cleanup(func() { cl.Eval(0, `catch erlmcp_loadgen:stop(lg), ok`, nil) })
	require.Equal(t, true, cl.Eval(0, `register(probe_hog, spawn(fun Scan() ->
	    _ = dets:select(erlmcp_sessions_dets, [{'_', [], [true]}]), Scan() end))`, nil))
	stopHog := func() { cl.Eval(0, `case whereis(probe_hog) of undefined -> ok; P -> exit(P, kill), ok end`, nil) }
	t.Cleanup(stopHog)

	api := agentapi.Migrate{C: cl.Client()}
	node := cl.Nodes[0].Name
	var progress []time.Duration
	rep, err := probe.Run(ctx, api, []string{node}, probe.Options{Duration: 3 * time.Second, Interval: 50 * time.Millisecond,
		Top: 5, Progress: func(done, _ time.Duration) { progress = append(progress, done) }})
	require.NoError(t, err)
	require.Empty(t, rep.Errors)
	require.NotEmpty(t, progress)
	by := map[string]probe.Proc{}
	for _, p := range rep.Procs {
		by[p.Proc] = p
		t.Logf("%s: %d looks, busy %.0f%%, queue %d/%d/%d, %+v", p.Proc, p.Looks, 100*p.BusyPart, p.QueueP50, p.QueueP95, p.QueueMax, p.Top)
	}
	require.Contains(t, by, "store")
	require.Contains(t, by, "dets")
	require.NotContains(t, by, "mnesia_tm", "no Mnesia on this node")
	d := by["dets"]
	require.GreaterOrEqual(t, d.Looks, 20, "3 s at 50 ms")
	require.Greater(t, d.BusyPart, 0.5, "the scans hold the DETS server")
	inDETS := 0.0
	for _, pl := range d.Top {
		if strings.HasPrefix(pl.Where, "dets") {
			inDETS += pl.Share
		}
	}
	require.Greater(t, inDETS, 0.5, "the DETS server is in DETS's own code (a file read named by its DETS caller): %+v", d.Top)
	s := by["store"]
	waitsOnDETS := false
	for _, pl := range s.Top {
		waitsOnDETS = waitsOnDETS || strings.HasPrefix(pl.Where, "dets:")
	}
	require.True(t, waitsOnDETS, "the store server waits in a DETS call: %+v", s.Top)

	stopHog()
	rep, err = probe.Run(ctx, api, []string{node}, probe.Options{Duration: 2 * time.Second, Interval: 50 * time.Millisecond, Top: 20})
	require.NoError(t, err)
	for _, p := range rep.Procs {
		t.Logf("after: %s: busy %.0f%%, %+v", p.Proc, 100*p.BusyPart, p.Top)
		if p.Proc == "dets" {
			require.Less(t, p.BusyPart, 0.5, "without the scans the DETS server is mostly idle")
			require.Equal(t, "idle", p.Top[len(p.Top)-1].Where, "idle comes last")
		}
	}

	// A node that cannot be reached is reported, the others still are.
	rep, err = probe.Run(ctx, api, []string{node, "nobody@127.0.0.1"}, probe.Options{Duration: 300 * time.Millisecond, Interval: 50 * time.Millisecond})
	require.NoError(t, err)
	require.Len(t, rep.Errors, 1)
	require.Equal(t, "nobody@127.0.0.1", rep.Errors[0].Node)
	require.NotEmpty(t, rep.Procs)
	_, err = probe.Run(ctx, api, []string{"nobody@127.0.0.1"}, probe.Options{Duration: 300 * time.Millisecond})
	require.Error(t, err)
}
