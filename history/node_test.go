package history_test

import (
	"context"
	"github.com/stretchr/testify/require"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/history"
	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func startLoadgen(t *testing.T, tk *testkit.Cluster, i int, name, opts string) {
	t.Helper()
	r := tk.Eval(i, `{ok, T, _} = erl_scan:string(Opts ++ "."), {ok, O} = erl_parse:parse_term(T),
	    case erlmcp_loadgen:start(O#{name => N}) of {ok, _} -> ok; E -> E end`,
		map[string]erl.Term{"N": erl.Atom(name), "Opts": opts})
	require.Equal(t, erl.Atom("ok"), r, tk.Nodes[i].Name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = tk.Client().Call(ctx, tk.Nodes[i].Name, "erlmcp_loadgen", "close", erl.Atom(name))
	})
}

// stopLoadgen stops it and returns {ops, errors}.
func stopLoadgen(t *testing.T, tk *testkit.Cluster, i int, name string) (int64, int64) {
	t.Helper()
	r := tk.Eval(i, `S = erlmcp_loadgen:stop(N), {maps:get(ops, S), maps:get(errors, S)}`,
		map[string]erl.Term{"N": erl.Atom(name)}).(erl.Tuple)
	return erl.Int64(r[0]), erl.Int64(r[1])
}

// One node, the ETS backend: every operation the load generator counted is
// in the history, the final read covers every key, and the history is
// linearizable; the old record (verify/2) still works alongside.
func TestLoadgenHistoryETS(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Backend: "erlmcp_session_ets"})
	startLoadgen(t, tk, 0, "h", `#{rate => 1500, keyspace => 200, history => true}`)
	time.Sleep(2 * time.Second)
	ops, errs := stopLoadgen(t, tk, 0, "h")
	require.Zero(t, errs)
	res, h := tk.CheckHistory(context.Background(), "{ets, erlmcp_sessions_ets}", history.Options{}, "h")
	require.True(t, res.OK(), res.Summary())

	var final, kinds = 0, map[history.Kind]int{}
	keys := map[string]bool{}
	for _, op := range h.Ops {
		if op.Client == 0 {
			final++
			continue
		}
		kinds[op.Kind]++
		keys[op.Key] = true
		require.LessOrEqual(t, op.Call, op.Return)
	}
	require.Equal(t, ops, int64(len(h.Ops)-final), "every counted operation is recorded")
	require.Equal(t, len(keys), final, "one final read per key")
	require.Greater(t, kinds[history.Store], 100)
	require.Greater(t, kinds[history.Fetch], 100)
	require.Greater(t, kinds[history.Delete], 50)
	require.Greater(t, res.Judged, int(ops))

	// The same real history with one read changed to a value nobody wrote,
	// and with one acknowledged store dropped (its later reads then look
	// like reads of a value nobody wrote, or stale): both must fail.
	for _, tamper := range []func(*history.History) bool{
		func(h *history.History) bool {
			for i := len(h.Ops) / 2; i < len(h.Ops); i++ {
				if op := h.Ops[i]; op.Kind == history.Fetch && op.Outcome == history.OK && op.Client != 0 {
					h.Ops[i].Digest ^= 0x5a5a5a5a
					return true
				}
			}
			return false
		},
		func(h *history.History) bool {
			for i := len(h.Ops) / 2; i < len(h.Ops); i++ {
				op := h.Ops[i]
				if op.Kind != history.Store || op.Outcome != history.OK {
					continue
				}
				for _, r := range h.Ops[i+1:] {
					if r.Key == op.Key && r.Kind == history.Fetch && r.Digest == op.Digest && r.Call > op.Return {
						h.Ops = append(h.Ops[:i:i], h.Ops[i+1:]...)
						return true
					}
				}
			}
			return false
		},
	} {
		bad := &history.History{Nodes: h.Nodes, Ops: append([]history.Op(nil), h.Ops...)}
		require.True(t, tamper(bad))
		r, err := history.Check(context.Background(), bad, history.Options{})
		require.NoError(t, err)
		require.False(t, r.OK())
		require.Len(t, r.Failures, 1)
		t.Logf("tampered: %s", r.Failures[0].Diagnosis)
	}

	v := tk.Eval(0, `maps:get(lost, erlmcp_loadgen:verify(h, {ets, erlmcp_sessions_ets}))`, nil)
	require.Equal(t, int64(0), erl.Int64(v))
	// Without the option there is no history.
	startLoadgen(t, tk, 0, "nohist", `#{rate => 100, keyspace => 10}`)
	r := tk.Eval(0, `erlmcp_loadgen:history(nohist)`, nil)
	require.Equal(t, erl.Tuple{erl.Atom("error"), erl.Atom("no_history")}, r)
}

// Three Mnesia nodes, clients on all of them on the same sessions: the
// merged history is linearizable per key, and the sessions really were
// shared (keys written from more than one node).
func TestLoadgenHistorySharedMnesia(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	for i := range tk.Nodes {
		startLoadgen(t, tk, i, "sh", `#{rate => 300, keyspace => 60, history => true, shared => true}`)
	}
	time.Sleep(3 * time.Second)
	for i := range tk.Nodes {
		_, errs := stopLoadgen(t, tk, i, "sh")
		require.Zero(t, errs)
	}
	r := tk.Eval(0, `erlmcp_loadgen:verify(sh, {mnesia, erlmcp_session})`, nil)
	require.Equal(t, erl.Tuple{erl.Atom("error"), erl.Atom("shared_sessions")}, r)

	res, h := tk.CheckHistory(context.Background(), "{mnesia, erlmcp_session}", history.Options{}, "sh")
	require.True(t, res.OK(), res.Summary())
	writers := map[string]map[string]bool{}
	for _, op := range h.Ops {
		if op.Kind != history.Fetch {
			if writers[op.Key] == nil {
				writers[op.Key] = map[string]bool{}
			}
			writers[op.Key][op.Node] = true
		}
	}
	multi := 0
	for _, w := range writers {
		if len(w) > 1 {
			multi++
		}
	}
	t.Logf("%d of %d keys written from more than one node", multi, len(writers))
	require.Greater(t, multi, len(writers)/2)
}

// TestHistoryCost measures what recording costs: the load generator's
// capacity (a rate it cannot reach, so the achieved rate is what the node
// can do) with and without the history, runs alternated, medians.
// MIGCTL_BENCH=1 runs it.
func TestHistoryCost(t *testing.T) {
	if os.Getenv("MIGCTL_BENCH") == "" {
		t.Skip("MIGCTL_BENCH=1 runs it")
	}
	tk := testkit.Start(t, testkit.Options{Backend: "erlmcp_session_ets"})
	const runs = 5
	var with, without []float64
	for run := range 2 * runs {
		hist := run%2 == 0
		r := tk.Eval(0, `{ok, _} = erlmcp_loadgen:start(#{name => cost, rate => 200000, keyspace => 10000, history => H}),
		    timer:sleep(3000), S = erlmcp_loadgen:stop(cost),
		    Bytes = case H of true -> byte_size(erlmcp_loadgen:history(cost)); false -> 0 end,
		    erlmcp_loadgen:close(cost), {maps:get(rate, S), maps:get(ops, S), Bytes}`,
			map[string]erl.Term{"H": hist}).(erl.Tuple)
		rate, _ := r[0].(float64)
		t.Logf("history=%v: %.0f ops/s (%d ops, history %d bytes)", hist, rate, erl.Int64(r[1]), erl.Int64(r[2]))
		if hist {
			with = append(with, rate)
		} else {
			without = append(without, rate)
		}
	}
	mw, mo := median(with), median(without)
	t.Logf("BENCH history cost: median %.0f ops/s with, %.0f without (%.1f %%), %d runs of 3 s each", mw, mo, 100*(mo-mw)/mo, runs)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// Shared sessions in the hybrid's phase2 at 100 % (every read from Mnesia
// first, every write to the node's DETS and Mnesia). Off by default
// (MIGCTL_PHASE2_SHARED=1 runs it) because it fails today, and rightly: a
// read that misses in Mnesia falls back to the node's own DETS, which
// still holds the session another node deleted, so deleted sessions come
// back (49 of 60 keys failed, all "resurrected delete"). Sessions must
// stay pinned to their node until phase3, as erlmcp's DETS store requires.
func TestLoadgenHistorySharedHybridPhase2(t *testing.T) {
	if os.Getenv("MIGCTL_PHASE2_SHARED") == "" {
		t.Skip("MIGCTL_PHASE2_SHARED=1 runs it")
	}
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_dets}", "{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase2}", "{migration_percent, 100}", "{session_cleanup_interval, infinity}"}})
	for i := range tk.Nodes {
		startLoadgen(t, tk, i, "sh2", `#{rate => 300, keyspace => 60, history => true, shared => true}`)
	}
	time.Sleep(3 * time.Second)
	for i := range tk.Nodes {
		stopLoadgen(t, tk, i, "sh2")
	}
	res, _ := tk.CheckHistory(context.Background(), "{mnesia, erlmcp_session}", history.Options{}, "sh2")
	require.True(t, res.OK(), res.Summary())
}
