// Package clusterbench measures package cluster against real nodes, for
// `make bench` (issue 5's "Speed"): how soon a split is reported after the
// islands reconnect; how long a heal of a 3-node cluster takes and whether
// it keeps every write, quiet (Heal) and with 1,000 ops/s of load on every
// node throughout (HealUnderLoad: total time, how long the losers' writers
// were held, the longest client call, every acknowledged operation
// checked); and what the change recorder costs the session store
// (RecorderCost: ops/s with and without it, the native reference). The
// harness calls these functions from a test binary whose TestMain runs
// testkit.Main.
package clusterbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// DetectionResult is the time from reconnecting two islands to Watch
// reporting the split, per run.
type DetectionResult struct {
	Runs   []time.Duration
	Median time.Duration
	Max    time.Duration
}

func (r DetectionResult) String() string {
	return fmt.Sprintf("split reported after reconnect: median %v, max %v over %d runs %v (goal <= 2s)",
		r.Median.Round(time.Millisecond), r.Max.Round(time.Millisecond), len(r.Runs), r.Runs)
}

// Detection splits a 3-node cluster 2|1 runs times while a Watch runs,
// reconnects the islands, and measures how long until the Watch reports a
// split whose nodes are connected again (the split Mnesia itself does not
// report). Between runs the cluster is healed.
func Detection(t testing.TB, runs int) DetectionResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, 1000)
	cl, err := cluster.New(tk.Client(), cluster.Options{Nodes: tk.Names()})
	must(t, err)
	var mu sync.Mutex
	var reports []cluster.WatchReport
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cl.Watch(wctx, cluster.WatchOptions{Interval: time.Second, OnReport: func(r cluster.WatchReport) {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		}})
	}()
	defer func() { wcancel(); <-done }()
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
	must(t, err)
	var res DetectionResult
	for run := 0; run < runs; run++ {
		time.Sleep(300 * time.Millisecond)
		tk.Partition([]int{0, 1}, []int{2})
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		from := len(reports)
		mu.Unlock()
		at := time.Now()
		for _, a := range []int{0, 1} {
			_, _ = tk.Client().Call(ctx, tk.Nodes[a].Name, "net_kernel", "connect_node", erl.Atom(tk.Nodes[2].Name))
		}
		var took time.Duration
		for took == 0 {
			if time.Since(at) > 30*time.Second {
				t.Fatalf("run %d: split not reported within 30s", run)
			}
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			for _, r := range reports[from:] {
				for _, s := range r.Status.Splits {
					if s.Connected && took == 0 {
						took = r.Time.Sub(at)
					}
				}
			}
			mu.Unlock()
		}
		res.Runs = append(res.Runs, took)
		p, err := cl.Plan(ctx, cluster.PlanOptions{})
		must(t, err)
		_, err = cl.Execute(ctx, p, cluster.ExecuteOptions{Journal: j, BackupDir: t.TempDir(), Reason: "bench"})
		must(t, err)
	}
	s := append([]time.Duration(nil), res.Runs...)
	sort.Slice(s, func(i, k int) bool { return s[i] < s[k] })
	res.Median, res.Max = s[len(s)/2], s[len(s)-1]
	return res
}

// HealResult is one measured heal.
type HealResult struct {
	Sessions int
	// Changed on the losing side during the split: updated, created, deleted.
	Updated, Created, Deleted int
	Plan                      time.Duration // cluster.Plan
	Execute                   time.Duration // cluster.Execute, backups included
	Steps                     []cluster.StepResult
	Merged                    cluster.MergeResult
	// Kept counts the losing side's writes found afterwards on every node
	// (of Updated+Created), Gone its deletions applied (of Deleted).
	Kept, Gone int
	Consistent bool
}

func (r HealResult) String() string {
	s := fmt.Sprintf("heal of 3 nodes, %d sessions, %d changed on the loser (%d updated, %d created, %d deleted): plan %v + execute %v = %v (goal <= 30s); writes kept %d/%d, deletions applied %d/%d, replicas consistent %v",
		r.Sessions, r.Updated+r.Created+r.Deleted, r.Updated, r.Created, r.Deleted,
		r.Plan.Round(time.Millisecond), r.Execute.Round(time.Millisecond), (r.Plan + r.Execute).Round(time.Millisecond),
		r.Kept, r.Updated+r.Created, r.Gone, r.Deleted, r.Consistent)
	for _, st := range r.Steps {
		s += fmt.Sprintf("\n  %-14s %v", st.Step, st.Duration.Round(time.Millisecond))
	}
	return s
}

// Heal seeds a 3-node cluster with sessions, splits it 2|1, changes
// `changed` sessions on the lone node (half updated, 30 % created, 20 %
// deleted), reconnects, plans and executes the heal, and checks that every
// one of those changes survived on every node.
func Heal(t testing.TB, sessions, changed int) HealResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, sessions)
	cl, err := cluster.New(tk.Client(), cluster.Options{Nodes: tk.Names(), Logger: logger()})
	must(t, err)
	res := HealResult{Sessions: sessions, Updated: changed / 2, Created: changed * 3 / 10}
	res.Deleted = changed - res.Updated - res.Created
	time.Sleep(50 * time.Millisecond)
	tk.Partition([]int{0, 1}, []int{2})
	time.Sleep(50 * time.Millisecond)
	// The loser's changes, made on the node in one go; it returns the ids
	// it wrote and deleted (as binaries: no session crosses the wire).
	r, err := tk.Client().Eval(ctx, tk.Nodes[2].Name, `
	    Keys = lists:sublist(mnesia:dirty_all_keys(erlmcp_session), U + D),
	    {Up, Del} = lists:split(U, Keys),
	    Now = erlang:system_time(millisecond),
	    lists:foreach(fun(K) -> {atomic, ok} = mnesia:transaction(fun() ->
	        [{T, K, S, _}] = mnesia:read(erlmcp_session, K, write),
	        mnesia:write({T, K, S#{last_accessed => Now + 1, metadata => #{<<"bench">> => <<"updated">>}}, Now + 1}) end) end, Up),
	    lists:foreach(fun(K) -> {atomic, ok} = mnesia:transaction(fun() -> mnesia:delete({erlmcp_session, K}) end) end, Del),
	    New = [<<"bench-new-", (integer_to_binary(I))/binary>> || I <- lists:seq(1, C)],
	    lists:foreach(fun(K) -> {atomic, ok} = mnesia:transaction(fun() ->
	        mnesia:write({erlmcp_session, K, #{id => K, created_at => Now + 1, last_accessed => Now + 1,
	                      timeout_ms => infinity, metadata => #{<<"bench">> => <<"created">>}}, Now + 1}) end) end, New),
	    term_to_binary({Up ++ New, Del})`,
		map[string]erl.Term{"U": res.Updated, "D": res.Deleted, "C": res.Created})
	must(t, err)
	blob, _ := r.([]byte)
	tk.ConnectAll(ctx)

	t0 := time.Now()
	p, err := cl.Plan(ctx, cluster.PlanOptions{})
	must(t, err)
	res.Plan = time.Since(t0)
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
	must(t, err)
	t1 := time.Now()
	rep, err := cl.Execute(ctx, p, cluster.ExecuteOptions{Journal: j, BackupDir: t.TempDir(), Reason: "bench"})
	res.Execute = time.Since(t1)
	must(t, err)
	res.Steps = rep.Steps
	if len(rep.Merged) > 0 {
		res.Merged = rep.Merged[0]
	}
	res.Consistent = rep.Healed && rep.Verify[0].Consistent
	// Count, on every node, the loser's writes present with its value and
	// its deletions applied; report the minimum over nodes.
	res.Kept, res.Gone = -1, -1
	for i := range tk.Nodes {
		c, err := tk.Client().Eval(ctx, tk.Nodes[i].Name, `
		    {W, D} = binary_to_term(B),
		    Kept = length([K || K <- W, [{_, _, #{metadata := #{<<"bench">> := _}}, _}] <- [mnesia:dirty_read(erlmcp_session, K)]]),
		    Gone = length([K || K <- D, [] =:= mnesia:dirty_read(erlmcp_session, K)]),
		    {Kept, Gone}`, map[string]erl.Term{"B": blob})
		must(t, err)
		ct := c.(erl.Tuple)
		k, g := toInt(ct[0]), toInt(ct[1])
		if res.Kept < 0 || k < res.Kept {
			res.Kept = k
		}
		if res.Gone < 0 || g < res.Gone {
			res.Gone = g
		}
	}
	return res
}

// logger logs the library's progress to stderr when MIGCTL_BENCH_DEBUG is set.
func logger() *slog.Logger {
	if os.Getenv("MIGCTL_BENCH_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func seed(t testing.TB, tk *testkit.Cluster, n int) {
	t.Helper()
	r := tk.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, n, 42)
	if tt, ok := r.(erl.Tuple); !ok || tt[0] != erl.Atom("ok") {
		t.Fatalf("seed: %v", r)
	}
}

func toInt(t erl.Term) int {
	switch v := t.(type) {
	case int:
		return v
	case int64:
		return int(v)
	}
	return -1
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
