package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/history"
	"github.com/erlmcp/migctl/testkit"
)

// The heal as an operator runs it at 3 a.m.: clients on every node keep
// working through the split, the plan, the fence, the merge, the losers'
// reload and the verify; nothing is paused or slowed by the test. Every
// round must heal (exit 0, replicas identical), and at the end every
// operation any client had acknowledged is in the store: 0 lost, 0 wrong,
// 0 resurrected. The decisions come from the change recorders
// (migctl_node), which run on every node as they would in a release.
// The load generators record every operation: outside the splits the
// history must be linearizable per session, and after each heal every
// session must hold what the heal's rule (the later change wins) allows
// (package history).

func TestHealUnderTraffic3Nodes(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 3, islands: [][]int{{0, 1}, {2}}, rounds: 3})
}

func TestHealUnderTraffic5Nodes(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 5, islands: [][]int{{0, 1, 2}, {3, 4}}, rounds: 2})
}

// Clients on every node also work on the same sessions (the load
// generator's shared mode), so both sides of each split change the same
// keys and the heal's rule has to choose between them, and the winning
// side's clients change keys the heal decided for the loser while the heal
// runs (the merge must keep those later changes: the conditional merge,
// see TestHealKeepsWinnerChangesMadeDuringHeal for the race made to happen
// every time). Before the merge also checked the winner's change record,
// about one run in three failed here: a winner's delete of a session it
// did not hold, acknowledged 230 ms after the loser's store, was undone by
// the merge.
func TestHealUnderTrafficSharedSessions(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 3, islands: [][]int{{0, 1}, {2}}, rounds: 3, shared: true})
}

// Shared sessions with three winning nodes: most of the winners' changes
// are made on nodes other than the one the merge runs on, and reach it by
// replication.
func TestHealUnderTraffic5NodesSharedSessions(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 5, islands: [][]int{{0, 1, 2}, {3, 4}}, rounds: 2, shared: true})
}

// The same mid-migration: the hybrid backend in phase2 at 50 % (DETS per
// node and Mnesia written together, half the reads from Mnesia, Mnesia
// written with sync_dirty, which the fence turns into transactions).
func TestHealUnderTrafficHybridPhase2(t *testing.T) {
	runTrafficHeal(t, trafficCase{nodes: 3, islands: [][]int{{0, 1}, {2}}, rounds: 2, hybrid: true})
}

type trafficCase struct {
	nodes   int
	islands [][]int
	rounds  int
	hybrid  bool
	shared  bool // a second load generator on sessions shared by every node
}

func runTrafficHeal(t *testing.T, tc trafficCase) {
	opts := testkit.Options{Nodes: tc.nodes, Mnesia: true, Backend: "erlmcp_session_mnesia"}
	if tc.hybrid {
		opts.Backend = "erlmcp_session_backend_hybrid"
		opts.AppEnv = []string{
			"{primary_backend, erlmcp_session_dets}",
			"{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase2}",
			"{migration_percent, 50}", // the final reads route as the hybrid does (below)
			"{session_cleanup_interval, infinity}",
		}
	}
	tk := testkit.Start(t, opts)
	time.Sleep(1100 * time.Millisecond) // the service ran a while before the split
	seed(t, tk, 0, 3000)
	cl := newCluster(t, tk)
	ctx := tctx(t)

	const lg = "lgt"
	// Shared: clients on every node also work on the same sessions (with
	// Mnesia alone; the hybrid's DETS is per node, sessions are pinned).
	loads := []string{lg}
	if tc.shared && !tc.hybrid {
		loads = append(loads, "lgshared")
	}
	for i := range tk.Nodes {
		for _, name := range loads {
			r := tk.Eval(i, `case erlmcp_loadgen:start(#{name => N, rate => R, keyspace => K, history => true, shared => N =:= lgshared}) of {ok, _} -> ok; E -> E end`,
				map[string]erl.Term{"N": erl.Atom(name), "R": map[bool]int{true: 250, false: 100}[name == lg], "K": map[bool]int{true: 300, false: 150}[name == lg]})
			require.Equal(t, erl.Atom("ok"), r)
		}
	}
	running := true
	stopAll := func() {
		for i := range tk.Nodes {
			for _, name := range loads {
				stopLoad(t, tk, i, name)
			}
		}
		running = false
	}
	t.Cleanup(func() {
		if running {
			stopAll()
		}
	})

	var longest time.Duration
	var splits []history.Window
	for round := range tc.rounds {
		// Splits a second apart: a healed loser's recorder starts again
		// with its reloaded Mnesia, and must cover the next cut.
		time.Sleep(time.Second)
		splits = append(splits, history.Window{Start: time.Now()})
		tk.Partition(tc.islands...)
		time.Sleep(2 * time.Second) // both sides take writes and deletes
		tk.ConnectAll(ctx)

		plan, err := cl.Plan(ctx, cluster.PlanOptions{})
		require.NoError(t, err, "round %d", round)
		require.Len(t, plan.Islands, len(tc.islands), "round %d", round)
		for _, tp := range plan.Tables {
			for _, lp := range tp.Losers {
				require.True(t, lp.EvidenceComplete, "round %d: %s", round, lp.Evidence)
				w, d, x := lp.Counts()
				t.Logf("round %d: plan: loser wrote %d, deleted %d; winner wrote %d, deleted %d; write %d delete %d drop %d",
					round, len(lp.WrittenOnLoser), len(lp.DeletedOnLoser), len(lp.WrittenOnWinner), len(lp.DeletedOnWinner), w, d, x)
				if len(lp.WrittenOnLoser) <= 20 {
					// Seen twice in CI (bb9e674, and stop 31's): the
					// loser's store server waiting for ever in
					// mnesia_tm:rec/2 since a reload (now freed; see
					// TestHealFreesProcessesLeftWaitingOnTheStoppedMnesia).
					// If it comes back: what the load generators and the
					// store servers were doing.
					// Printed on the node: a failed store's reason holds the
					// session map (binary keys), which would drop ergo's
					// connection if it came back as a term.
					for i := range tk.Nodes {
						for _, name := range loads {
							t.Logf("round %d: %s %s: %s", round, tk.Nodes[i].Name, name,
								tk.Eval(i, `iolist_to_binary(io_lib:format("~0tp", [maps:with([ops, errors, skipped, uncertain, last_errors, rate], erlmcp_loadgen:stats(N))]))`, map[string]erl.Term{"N": erl.Atom(name)}))
						}
						t.Logf("round %d: %s store server: %s", round, tk.Nodes[i].Name,
							tk.Eval(i, `iolist_to_binary(io_lib:format("~0tp", [{mnesia:system_info(is_running), mnesia:system_info(running_db_nodes),
							    case whereis(erlmcp_session_store) of undefined -> undefined; P -> process_info(P, [status, message_queue_len, current_stacktrace]) end}]))`, nil))
					}
				}
				require.Greater(t, len(lp.WrittenOnLoser), 20, "the loser's clients wrote during the split")
				require.NotEmpty(t, lp.DeletedOnLoser, "the loser's clients deleted during the split")
			}
		}
		rep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: openJournal(t), BackupDir: t.TempDir(),
			Reason: fmt.Sprintf("traffic round %d", round)})
		for _, s := range rep.Steps {
			t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
		}
		splits[len(splits)-1].End = time.Now()
		require.NoError(t, err, "round %d", round)
		require.True(t, rep.Healed)
		require.Equal(t, cluster.Healthy, rep.Final.Verdict)
		if len(rep.Repaired) > 0 {
			t.Logf("round %d: replicas repaired: %v", round, rep.Repaired)
		}
		t.Logf("round %d: healed in %v; the losers' writers were held %v", round, rep.Duration.Round(time.Millisecond), rep.LongestFence.Round(time.Millisecond))
		longest = max(longest, rep.LongestFence)
		vr, err := cl.VerifyReplication(ctx, cluster.VerifyOptions{})
		require.NoError(t, err)
		for _, r := range vr {
			require.True(t, r.Consistent, "round %d: %s", round, r.Text())
		}
		// The store servers are erlmcp-shaped (they catch nothing): a
		// loser's may have died with its Mnesia, but the application must
		// still run and serve, its supervisor not suspended.
		for i := range tk.Nodes {
			r := tk.Eval(i, `Sup = whereis(erlmcp_fixture_sup),
			    {lists:keymember(erlmcp_fixture, 1, application:which_applications()),
			     is_pid(Sup) andalso lists:nth(2, element(4, sys:get_status(Sup, 5000))) =:= running,
			     is_pid(whereis(erlmcp_session_store))}`, nil)
			require.Equal(t, erl.Tuple{true, true, true}, r, "round %d: %s: {application running, supervisor not suspended, store server up}", round, tk.Nodes[i].Name)
			// Up is not enough: a store server caught starting a
			// transaction by the loser's stop of Mnesia stayed alive and
			// answered nobody (TestHealFreesProcessesLeftWaitingOnTheStoppedMnesia).
			r = tk.Eval(i, `catch gen_server:call(erlmcp_session_store, {fetch, <<"migctl-test-probe">>}, 5000)`, nil)
			require.Equal(t, erl.Tuple{erl.Atom("error"), erl.Atom("not_found")}, r, "round %d: %s's store server answers", round, tk.Nodes[i].Name)
		}
	}
	time.Sleep(500 * time.Millisecond) // traffic on the healed cluster
	stopAll()

	var worst int64
	for i := range tk.Nodes {
		v := verifyLoad(t, tk, i, lg)
		st := tk.Eval(i, `S = erlmcp_loadgen:stats(N), {maps:get(ops, S), maps:get(errors, S), maps:get(max_latency_us, S)}`,
			map[string]erl.Term{"N": erl.Atom(lg)}).(erl.Tuple)
		t.Logf("%s: checked %d lost %d wrong %d resurrected %d; %d ops, %d errors, longest call %d ms",
			tk.Nodes[i].Name, v[0], v[1], v[2], v[3], toInt(st[0]), toInt(st[1]), toInt(st[2])/1000)
		worst = max(worst, toInt(st[2]))
		require.Greater(t, v[0], int64(100), tk.Nodes[i].Name)
		require.Equal(t, [3]int64{0, 0, 0}, [3]int64{v[1], v[2], v[3]}, "%s: lost, wrong, resurrected", tk.Nodes[i].Name)
		if tc.hybrid {
			// What the clients read in phase2 comes from Mnesia for half
			// the sessions and DETS for the rest: the node's DETS file
			// holds every acknowledged value of the sessions it served.
			d := verifyLoadIn(t, tk, i, lg, `{dets, erlmcp_sessions_dets}`)
			t.Logf("%s DETS: checked %d lost %d wrong %d resurrected %d", tk.Nodes[i].Name, d[0], d[1], d[2], d[3])
			require.Equal(t, [3]int64{0, 0, 0}, [3]int64{d[1], d[2], d[3]}, "%s DETS: lost, wrong, resurrected", tk.Nodes[i].Name)
		}
	}
	t.Logf("longest fence %v; longest client call %d ms", longest.Round(time.Millisecond), worst/1000)

	// A context of its own: the test's may be nearly spent by now.
	hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer hcancel()
	// The final reads are the store as the clients see it: in phase2 the
	// hybrid reads half the sessions from DETS (a dual write that failed
	// on Mnesia after DETS took it, when the loser's Mnesia stopped under
	// the fence, leaves the two different for that session; the clients
	// never read the Mnesia copy of it; a full consistency check reports it).
	final := "{mnesia, erlmcp_session}"
	if tc.hybrid {
		final = "{hybrid, 50, erlmcp_sessions_dets, erlmcp_session}"
	}
	hres, h := tk.CheckHistory(hctx, final, history.Options{Splits: splits}, loads...)
	require.True(t, hres.OK(), hres.Summary())
	require.Len(t, hres.Splits, tc.rounds)
	for i, s := range hres.Splits {
		require.Positive(t, s.KeysWritten, "split %d: keys written during it", i+1)
		require.Greater(t, s.HealKeys, 100, "split %d: keys judged against the heal rule", i+1)
	}
	// The heal rule's judgement is not vacuous: the same real history,
	// with one final read changed to the earlier of two changes made
	// during the last split (on different nodes where there are any),
	// must fail.
	bad := healTampered(t, h, splits[len(splits)-1])
	bres, err := history.Check(hctx, bad, history.Options{Splits: splits})
	require.NoError(t, err)
	require.False(t, bres.OK(), "a heal that kept the earlier change must fail the checker")
	t.Logf("tampered heal: %s", bres.Failures[0].Diagnosis)

}

// verifyLoadIn checks a load generator's record against the store spec
// (an Erlang term in text): {checked, lost, wrong, resurrected}.
func verifyLoadIn(t *testing.T, tk *testkit.Cluster, i int, name, spec string) [4]int64 {
	t.Helper()
	r := tk.Eval(i, `{ok, T, _} = erl_scan:string(Spec ++ "."), {ok, S} = erl_parse:parse_term(T),
	    V = erlmcp_loadgen:verify(N, S),
	    {maps:get(checked, V), maps:get(lost, V), maps:get(wrong_value, V), maps:get(resurrected, V)}`,
		map[string]erl.Term{"N": erl.Atom(name), "Spec": spec})
	tt, ok := r.(erl.Tuple)
	require.True(t, ok, "verify: %v", r)
	return [4]int64{toInt(tt[0]), toInt(tt[1]), toInt(tt[2]), toInt(tt[3])}
}

// healTampered copies h and changes the final read of one key to the
// earlier of two acknowledged changes made during split w, the later one
// called after the earlier returned: on different nodes if some key has
// such a pair, else on one node.
func healTampered(t *testing.T, h *history.History, w history.Window) *history.History {
	t.Helper()
	s, e := w.Start.UnixNano(), w.End.UnixNano()
	byKey := map[string][]history.Op{}
	for _, op := range h.Ops {
		if op.Kind != history.Fetch && op.Outcome == history.OK && op.Call >= s && op.Call < e {
			byKey[op.Key] = append(byKey[op.Key], op)
		}
	}
	bad := &history.History{Nodes: h.Nodes, Ops: append([]history.Op(nil), h.Ops...)}
	for _, crossNode := range []bool{true, false} {
		for i, f := range bad.Ops {
			if f.Client != 0 || f.Kind != history.Fetch {
				continue
			}
			for _, u := range byKey[f.Key] {
				if u.Kind != history.Store {
					continue
				}
				for _, v := range byKey[f.Key] {
					if (v.Node != u.Node || !crossNode) && v.Call > u.Return && (v.Kind == history.Delete || v.Digest != u.Digest) &&
						!touchedAfter(h, u, v.Call) {
						t.Logf("tampering: %s ends as %s wrote it, although %s came later", f.Key, u, v)
						bad.Ops[i].Digest, bad.Ops[i].Outcome = u.Digest, history.OK
						return bad
					}
				}
			}
		}
	}
	t.Fatal("no key was changed twice one after the other during the split")
	return nil
}

// touchedAfter says whether a fetch read u's value after t (a fetch
// rewrites the row, a change the heal's rule counts as the later one).
func touchedAfter(h *history.History, u history.Op, t int64) bool {
	for _, op := range h.Ops {
		if op.Key == u.Key && op.Kind == history.Fetch && op.Outcome == history.OK && op.Digest == u.Digest && op.Return > t {
			return true
		}
	}
	return false
}
