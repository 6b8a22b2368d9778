package benchkit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// TestBenchMigration runs the three measurements of issue 3's "Speed"
// section on real clusters (`make bench`). It is skipped unless
// MIGCTL_BENCH is set (it takes minutes); MIGCTL_BENCH_SESSIONS sizes the
// backfill (default 100,000; the 1,000,000 needs ~4 GB of RAM for
// three Mnesia replicas), MIGCTL_BENCH_ROUNDS its rounds (default 3).
func TestBenchMigration(t *testing.T) {
	if os.Getenv("MIGCTL_BENCH") == "" {
		t.Skip("set MIGCTL_BENCH=1 to run the benchmarks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	env := migHybridEnv("phase1")

	t.Run("backfill", func(t *testing.T) {
		n := migEnvInt("MIGCTL_BENCH_SESSIONS", 100000)
		cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
		r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 42)
		require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
		m := migMigrator(t, cl)
		b, err := BenchBackfill(ctx, cl.Client(), m, cl.Nodes[0].Name, 1000, migEnvInt("MIGCTL_BENCH_ROUNDS", 3))
		require.NoError(t, err)
		t.Log(b)
		rep, err := m.Backfill(ctx, migrate.BackfillOptions{BatchSize: 1000, NoThrottle: true, Restart: true})
		require.NoError(t, err)
		t.Logf("one more migctl run over existing data: %.1fs wall, %.1fs in calls, %d calls", rep.Record.Seconds, rep.PerNode[cl.Nodes[0].Name].CallSeconds, rep.PerNode[cl.Nodes[0].Name].Batches)
	})
	t.Run("latency", func(t *testing.T) {
		cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
		l, err := BenchHybridLatency(ctx, cl.Client(), cl.Nodes[0].Name, migEnvInt("MIGCTL_BENCH_OPS", 3000))
		require.NoError(t, err)
		t.Log(l)
	})
	t.Run("phase set on 5 nodes under load", func(t *testing.T) {
		cl := testkit.Start(t, testkit.Options{Nodes: 5, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
			AppEnv: migHybridEnv("phase2")})
		m := migMigrator(t, cl)
		for i := range cl.Nodes { // 5 x 200 = 1,000 ops/s
			r := cl.Eval(i, `element(1, erlmcp_loadgen:start(#{rate => 200, keyspace => 2000, name => lg}))`, nil)
			require.Equal(t, erl.Atom("ok"), r)
		}
		t.Cleanup(func() {
			for i := range cl.Nodes {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = cl.Client().Call(cctx, cl.Nodes[i].Name, "erlmcp_loadgen", "close", erl.Atom("lg"))
				cancel()
			}
		})
		time.Sleep(time.Second)
		p, err := BenchPhaseSet(ctx, m, migEnvInt("MIGCTL_BENCH_CHANGES", 10))
		require.NoError(t, err)
		var ops, errs, anomalies int64
		for i := range cl.Nodes {
			s := cl.Eval(i, `maps:without([last_errors], erlmcp_loadgen:stop(lg))`, nil).(erl.Map)
			get := func(k string) int64 { return erl.Int64(s[erl.Atom(k)]) }
			ops += get("ops")
			errs += get("errors")
			anomalies += get("read_lost") + get("read_wrong") + get("read_resurrected")
		}
		t.Logf("%s; load: %d operations, %d failed, %d read anomalies during the switches", p, ops, errs, anomalies)
		require.Zero(t, errs)
	})
}

func migEnvInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// migHybridEnv: the hybrid DETS -> Mnesia at phase.
func migHybridEnv(phase string) []string {
	return []string{
		"{primary_backend, erlmcp_session_dets}",
		"{secondary_backend, erlmcp_session_mnesia}",
		"{migration_phase, " + phase + "}",
		"{session_cleanup_interval, infinity}",
	}
}

func migMigrator(t *testing.T, cl *testkit.Cluster) *migrate.Migrator {
	t.Helper()
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	m, err := migrate.New(migrate.Config{Client: cl.Client(), Nodes: cl.Names(), Journal: j,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	require.NoError(t, err)
	return m
}
