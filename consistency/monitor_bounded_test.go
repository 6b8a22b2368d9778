package consistency_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
)

// footprint is what a long-running monitor could leak, on both sides:
// per node the atoms (never collected: a leak of one per cycle ends the
// node within the two weeks of a monitor at short intervals), processes,
// ETS tables and ports; in migctl's process the goroutines, open files
// and Prometheus series (a label per cycle would grow the scrape forever).
type footprint struct {
	nodes      [][4]int64 // atoms, processes, ets tables, ports
	goroutines int
	fds        int
	series     int
}

// measure takes the least of five readings 50 ms apart: what the traffic
// and the last cycle's stragglers hold for a moment (a client call's
// process, a connection's goroutine) must not read as growth on a slow
// machine, while anything kept per cycle is in every reading.
func measure(t *testing.T, p *pair, mon *consistency.Monitor) footprint {
	t.Helper()
	var f footprint
	for s := 0; s < 5; s++ {
		if s > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		for i := range p.cl.Nodes {
			r := p.cl.Eval(i, `{erlang:system_info(atom_count), erlang:system_info(process_count),
				length(ets:all()), length(erlang:ports())}`, nil).(erl.Tuple)
			v := [4]int64{erl.Int64(r[0]), erl.Int64(r[1]), erl.Int64(r[2]), erl.Int64(r[3])}
			if s == 0 {
				f.nodes = append(f.nodes, v)
				continue
			}
			for k := range v {
				f.nodes[i][k] = min(f.nodes[i][k], v[k])
			}
		}
		runtime.GC()
		fds, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		if g := runtime.NumGoroutine(); s == 0 || g < f.goroutines {
			f.goroutines = g
		}
		if s == 0 || len(fds) < f.fds {
			f.fds = len(fds)
		}
	}
	mfs, err := mon.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		f.series += len(mf.GetMetric())
	}
	return f
}

// A monitor left running for weeks makes thousands of cycles: incremental
// cycles and full passes, under traffic. After a warm-up, 50 more cycles
// (with a full pass every few seconds) must leave the nodes and migctl
// where they were: no atom, process, ETS table, port, goroutine, open file
// or metric series per cycle; and the journal keeps only the last
// Retention of check records.
func TestMonitorFootprintBoundedOverManyCycles(t *testing.T) {
	const n, warm, cycles = 5000, 10, 50
	p := dualWrite(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	jpath := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(jpath, journal.Options{})
	require.NoError(t, err)
	mon, err := consistency.NewMonitor(consistency.MonitorConfig{Source: p.src, Target: p.tgt, Journal: j,
		Incremental: true, FullInterval: 3 * time.Second, Interval: time.Second,
		AlertOnMismatch: true, CallsPerSecond: 1000,
		// Short enough that the run prunes, as a two-week monitor does
		// after its first DefaultRetention.
		Retention: 2 * time.Second,
		// Six rechecks 300 ms apart (they stop as soon as nothing
		// differs): a dual write whose second half waits out a stall of
		// the shared CI machine settles within them, as it does within
		// the default 2 s x 2 in production. This test is about what a
		// long run keeps, the false-alarm tests are elsewhere.
		Check: consistency.Options{Client: p.cl.Client(), RecheckDelay: 300 * time.Millisecond, Rechecks: 6}})
	require.NoError(t, err)
	require.NoError(t, mon.Open(ctx))
	t.Cleanup(func() { _ = mon.Close(context.Background()) })
	stop := startLoadgen(t, p, 200, 2000)

	cycle := func() {
		t.Helper()
		rep, err := mon.CheckNow(ctx)
		require.NoError(t, err)
		require.True(t, rep.Clean(), "false alarm: %v", rep.Samples)
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < warm; i++ {
		cycle()
	}
	before := measure(t, p, mon)
	st0 := mon.State()
	size0 := fileSize(t, jpath)
	for i := 0; i < cycles; i++ {
		cycle()
	}
	after := measure(t, p, mon)
	st := mon.State()
	size := fileSize(t, jpath)
	t.Logf("before %+v\nafter  %+v", before, after)
	t.Logf("%d incremental cycles, %d full passes; journal %d -> %d bytes (pruned to the last 2 s as it went)", st.Cycles-st0.Cycles,
		st.FullPasses-st0.FullPasses, size0, size)
	require.GreaterOrEqual(t, st.FullPasses-st0.FullPasses, int64(1), "the full passes were part of the run")
	require.GreaterOrEqual(t, st.Cycles-st0.Cycles, int64(cycles/2), "and the incremental cycles")
	require.EqualValues(t, 0, st.Mismatches)

	// The journal keeps the last Retention of check records: the older
	// ones were deleted as the monitor went (the run is several times
	// longer), and none older than that (plus a prune interval and a
	// cycle or two) is left.
	recs, err := j.List(consistency.EntryCheck, 0)
	require.NoError(t, err)
	t.Logf("check records left %d of %d checks", len(recs), st.Checks)
	require.Less(t, int64(len(recs)), st.Checks/2, "old check records were pruned")
	for _, r := range recs {
		require.WithinDuration(t, time.Now(), r.Time, 8*time.Second, "record %d is older than the retention", r.Seq)
	}

	// A leak of one thing per cycle grows by `cycles`; what moves with the
	// traffic (a process a client call spawns) by a few.
	for i := range before.nodes {
		b, a := before.nodes[i], after.nodes[i]
		require.LessOrEqual(t, a[0]-b[0], int64(5), "node %d: atoms %d -> %d", i, b[0], a[0])
		require.LessOrEqual(t, a[1]-b[1], int64(10), "node %d: processes %d -> %d", i, b[1], a[1])
		require.LessOrEqual(t, a[2]-b[2], int64(2), "node %d: ETS tables %d -> %d", i, b[2], a[2])
		require.LessOrEqual(t, a[3]-b[3], int64(2), "node %d: ports %d -> %d", i, b[3], a[3])
	}
	require.LessOrEqual(t, after.goroutines-before.goroutines, 5, "goroutines %d -> %d", before.goroutines, after.goroutines)
	require.LessOrEqual(t, after.fds-before.fds, 2, "open files %d -> %d", before.fds, after.fds)
	require.Equal(t, before.series, after.series, "metric series")

	v := p.cl.Eval(0, `maps:without([samples], erlmcp_loadgen:verify(lg, {mnesia, erlmcp_session}))`, nil).(erl.Map)
	t.Logf("load %v; verify %v", stop(), v)
	require.EqualValues(t, 0, erl.Int64(v[erl.Atom("lost")]))
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}
