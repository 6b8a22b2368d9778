package clusterbench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// LagResult is how the change recorders' times of writes relate to the
// writes' calls, under load. A heal orders two sides' changes by these
// times (cluster package, Evidence): a change's time must fall inside its
// client's call for the order to follow what the clients saw.
type LagResult struct {
	Writes int
	Rate   int // ops/s of background load, all nodes together
	// OriginVsReturn: per write, the origin node's recorder time minus
	// the time the client's call returned (µs; negative: inside the call).
	OriginVsReturn []int64
	// OriginVsCall: per write, the origin's time minus the call's start
	// (µs; never negative when the clocks agree).
	OriginVsCall []int64
	// ReplicaVsOrigin: per write and other node, that node's recorder
	// time minus the origin's (µs): how late a replica stamps it.
	ReplicaVsOrigin []int64
	Missing         int // records not found (a recorder not subscribed)
}

func quantiles(v []int64) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	q := func(p int) int64 { return s[(len(s)-1)*p/100] }
	return fmt.Sprintf("p50 %d µs, p99 %d µs, max %d µs", q(50), q(99), s[len(s)-1])
}

func (r LagResult) String() string {
	after := 0
	for _, d := range r.OriginVsReturn {
		if d > 0 {
			after++
		}
	}
	return fmt.Sprintf("BENCH recorder stamps  %d erlmcp stores under %d ops/s on 3 nodes: origin's time - call start %s\n"+
		"BENCH recorder stamps  origin's time - call return %s; after the return: %d of %d (%.2f %%)\n"+
		"BENCH recorder stamps  a replica's time - the origin's %s (what the heal no longer takes; records missing %d)",
		r.Writes, r.Rate, quantiles(r.OriginVsCall), quantiles(r.OriginVsReturn), after, len(r.OriginVsReturn),
		100*float64(after)/float64(max(1, len(r.OriginVsReturn))), quantiles(r.ReplicaVsOrigin), r.Missing)
}

// RecorderLag stores `writes` new sessions through erlmcp's store on each
// of 3 nodes (Mnesia backend, one every 5 ms), beside load generators at
// `rate` ops/s in all, timing each call, and compares with the recorders'
// times of those writes on every node.
func RecorderLag(t testing.TB, sessions, writes, rate int) LagResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed(t, tk, sessions)
	settle(ctx, t, tk)
	recorders(ctx, t, tk, true)
	for i := range tk.Nodes {
		r, err := tk.Client().Eval(ctx, tk.Nodes[i].Name,
			`case erlmcp_loadgen:start(#{name => bench_lag_lg, rate => R, keyspace => K}) of {ok, _} -> ok; E -> E end`,
			map[string]erl.Term{"R": max(1, rate/len(tk.Nodes)), "K": max(1, sessions)})
		must(t, err)
		if r != erl.Atom("ok") {
			t.Fatalf("start load generator on %s: %v", tk.Nodes[i].Name, r)
		}
	}
	defer func() {
		for i := range tk.Nodes {
			_, _ = tk.Client().Eval(ctx, tk.Nodes[i].Name, `catch erlmcp_loadgen:stop(bench_lag_lg), catch erlmcp_loadgen:close(bench_lag_lg), ok`, nil)
		}
	}()
	time.Sleep(time.Second)

	// Each node stores its own keys, timing each call in system time (µs,
	// the recorder's clock).
	type call struct{ start, ret int64 }
	calls := make([]map[string]call, len(tk.Nodes))
	var wg sync.WaitGroup
	for i := range tk.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tk.Client().Eval(ctx, tk.Nodes[i].Name,
				`[begin
				     Id = <<"bench-lag-", (integer_to_binary(Node))/binary, "-", (integer_to_binary(I))/binary>>,
				     S = #{id => Id, created_at => erlang:system_time(millisecond),
				           last_accessed => erlang:system_time(millisecond), timeout_ms => 3600000, metadata => #{}},
				     C = erlang:system_time(microsecond),
				     ok = erlmcp_session_store:store(Id, S),
				     Ret = erlang:system_time(microsecond),
				     timer:sleep(5),
				     {Id, C, Ret}
				 end || I <- lists:seq(1, N)]`,
				map[string]erl.Term{"Node": i, "N": writes})
			must(t, err)
			calls[i] = map[string]call{}
			for _, e := range r.(erl.List) {
				tt := e.(erl.Tuple)
				calls[i][string(erl.Bytes(tt[0]))] = call{erl.Int64(tt[1]), erl.Int64(tt[2])}
			}
		}()
	}
	wg.Wait()

	// Every node's record of every key.
	var ids erl.List
	for i := range calls {
		for id := range calls[i] {
			ids = append(ids, []byte(id))
		}
	}
	stamps := make([]map[string]int64, len(tk.Nodes))
	for j := range tk.Nodes {
		r, err := tk.Client().Eval(ctx, tk.Nodes[j].Name,
			`[{K, Us} || {K, write, Us, _, _} <- migctl_recorder:lookup_us(erlmcp_session, Ids)]`,
			map[string]erl.Term{"Ids": ids})
		must(t, err)
		stamps[j] = map[string]int64{}
		for _, e := range r.(erl.List) {
			tt := e.(erl.Tuple)
			stamps[j][string(erl.Bytes(tt[0]))] = erl.Int64(tt[1])
		}
	}
	res := LagResult{Writes: writes * len(tk.Nodes), Rate: rate}
	for i := range calls {
		for id, c := range calls[i] {
			o, ok := stamps[i][id]
			if !ok {
				res.Missing++
				continue
			}
			res.OriginVsCall = append(res.OriginVsCall, o-c.start)
			res.OriginVsReturn = append(res.OriginVsReturn, o-c.ret)
			for j := range tk.Nodes {
				if j == i {
					continue
				}
				if s, ok := stamps[j][id]; ok {
					res.ReplicaVsOrigin = append(res.ReplicaVsOrigin, s-o)
				} else {
					res.Missing++
				}
			}
		}
	}
	return res
}
