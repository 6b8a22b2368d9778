package migrate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

func tctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("MIGCTL_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// hybridEnv is the application env of a hybrid store.
func hybridEnv(primary, secondary, phase string) []string {
	return []string{
		"{primary_backend, " + primary + "}",
		"{secondary_backend, " + secondary + "}",
		"{migration_phase, " + phase + "}",
		"{session_cleanup_interval, infinity}",
	}
}

func newJournal(t *testing.T) *journal.Journal {
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	return j
}

func newMigrator(t *testing.T, cl *testkit.Cluster, j *journal.Journal) *Migrator {
	m, err := New(Config{Client: cl.Client(), Nodes: cl.Names(), Journal: j, Logger: testLogger()})
	require.NoError(t, err)
	return m
}

// evalMap runs src on node i; src must return a map with atom keys and
// plain values.
func evalTerm(t *testing.T, cl *testkit.Cluster, i int, src string, b map[string]erl.Term) erl.Term {
	t.Helper()
	return cl.Eval(i, src, b)
}

func mapInt(m erl.Term, k string) int64 {
	mm, ok := m.(erl.Map)
	if !ok {
		return -1
	}
	return erl.Int64(mm[erl.Atom(k)])
}

func startLoad(t *testing.T, cl *testkit.Cluster, rate, keyspace int) {
	for i := range cl.Nodes {
		r := evalTerm(t, cl, i, `element(1, erlmcp_loadgen:start(#{rate => R, keyspace => K, name => lg}))`,
			map[string]erl.Term{"R": rate, "K": keyspace})
		require.Equal(t, erl.Atom("ok"), r)
	}
}

// stopLoad stops every loadgen and returns its stats (without the error
// samples, which hold ids and sessions).
func stopLoad(t *testing.T, cl *testkit.Cluster) []erl.Map {
	var out []erl.Map
	for i := range cl.Nodes {
		r := evalTerm(t, cl, i, `S = erlmcp_loadgen:stop(lg), (maps:without([last_errors], S))#{errs => iolist_to_binary(io_lib:format("~0P", [lists:sublist(maps:get(last_errors, S), 3), 30]))}`, nil)
		out = append(out, r.(erl.Map))
	}
	return out
}

func verifyLoad(t *testing.T, cl *testkit.Cluster, spec string) []erl.Map {
	var out []erl.Map
	for i := range cl.Nodes {
		r := evalTerm(t, cl, i, `case erlmcp_loadgen:verify(lg, `+spec+`) of
		    M when is_map(M) -> (maps:without([samples], M))#{sample => iolist_to_binary(io_lib:format("~0P", [maps:get(samples, M), 40]))};
		    E -> #{error => iolist_to_binary(io_lib:format("~0p", [E]))} end`, nil)
		out = append(out, r.(erl.Map))
	}
	return out
}

func closeLoad(cl *testkit.Cluster) {
	for i := range cl.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = cl.Client().Call(ctx, cl.Nodes[i].Name, "erlmcp_loadgen", "close", erl.Atom("lg"))
		cancel()
	}
}

func describe(m erl.Map) string {
	s := ""
	for k, v := range m {
		if b, ok := v.([]byte); ok {
			v = string(b)
		}
		s += fmt.Sprintf("%v=%v ", k, v)
	}
	return s
}

func dumpJournal(j *journal.Journal) string {
	es, _ := j.List("", 0)
	out := ""
	for _, e := range es {
		out += fmt.Sprintf("\n#%d %s %s %s", e.Seq, e.Time.Format("15:04:05.000"), e.Kind, e.Data)
	}
	return out
}

// dualWriteNode starts one node with the hybrid backend in phase0 (DETS
// primary, Mnesia secondary) and n DETS sessions (fixture seed), and
// returns it with a journal and a migrator on it.
func dualWriteNode(t *testing.T, n int, seed int) (*testkit.Cluster, *journal.Journal, *Migrator) {
	t.Helper()
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	j := newJournal(t)
	m := newMigrator(t, cl, j)
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, seed)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	return cl, j, m
}

// requireDetsInMnesia: every session of node 0's DETS file is in Mnesia
// with the same value (the load must be stopped: nothing in flight), and
// the file holds more than minRows.
func requireDetsInMnesia(t *testing.T, cl *testkit.Cluster, minRows int64) {
	t.Helper()
	r := evalTerm(t, cl, 0, `
		Rows = dets:select(erlmcp_sessions_dets, [{'_', [], ['$_']}]),
		Bad = [Id || {Id, S} <- Rows, case mnesia:dirty_read(erlmcp_session, Id) of
		                                  [{_, _, S, _}] -> false;
		                                  _ -> true
		                              end],
		#{rows => length(Rows), bad => length(Bad),
		  sample => iolist_to_binary(io_lib:format("~0P", [lists:sublist(Bad, 5), 20]))}`, nil)
	t.Logf("DETS vs Mnesia: %s", describe(r.(erl.Map)))
	require.Greater(t, mapInt(r, "rows"), minRows)
	require.Zero(t, mapInt(r, "bad"), "sessions of DETS missing or different in Mnesia")
}
