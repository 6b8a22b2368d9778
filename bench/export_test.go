//go:build bench

package bench

import (
	"github.com/erlmcp/migctl/erl"
	"github.com/stretchr/testify/require"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/exportfile"
	"github.com/erlmcp/migctl/testkit"
)

// TestBenchExport: exporting N sessions from DETS and from Mnesia through
// migctl vs an Erlang node reading the same rows from the same node with
// rpc:call in batches of the same size (goal: ratio >= 1.0).
func TestBenchExport(t *testing.T) {
	want(t, "export")
	n := envInt("BENCH_N", 100000)
	runs := envInt("BENCH_RUNS", 3)
	const batch = 1000
	// Node 1 holds the stores; node 2 is the native reader.
	cl := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, MnesiaNodes: 1, Backend: ""})
	require.NoError(t, cl.Nodes[0].StartApp(bctx(t), "erlmcp_session_dets"))
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 1)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	r = cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, n, 2)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	loadRef(t, cl, 0, 1)
	c := cl.Client()
	node := cl.Nodes[0].Name

	for _, kind := range []backends.Kind{backends.KindDETS, backends.KindMnesia} {
		s, err := backends.Open(c, node, backends.DefaultSpec(kind))
		require.NoError(t, err)
		var ours, native, ratios []float64
		for i := 0; i < runs; i++ {
			mine := func() {
				f, err := os.Create(filepath.Join(t.TempDir(), "x.mexp"))
				require.NoError(t, err)
				start := time.Now()
				tr, err := exportfile.Export(bctx(t), s, f, batch, nil)
				require.NoError(t, err)
				el := time.Since(start).Seconds()
				f.Close()
				require.EqualValues(t, n, tr.Count)
				ours = append(ours, float64(n)/el)
			}
			ref := func() {
				fn := "dets_pull"
				tab := erl.Atom(backends.DefaultDETSTable)
				if kind == backends.KindMnesia {
					fn, tab = "ets_pull", erl.Atom(backends.DefaultMnesiaTable)
				}
				res := cl.Call(1, "bench_ref", fn, erl.Atom(node), tab, batch).(erl.Tuple)
				// The reference's select continuations run in a new rex
				// process each time, so the table is not fixed and DETS's
				// incremental rehash can return a few rows twice; migctl's
				// scan fixes the table and returns each row once.
				require.GreaterOrEqual(t, toInt(res[0]), int64(n))
				us := float64(toInt(res[1]))
				native = append(native, float64(n)/(us/1e6))
			}
			// Alternate which goes first, so that a neighbour's load that
			// comes and goes falls on both alike.
			if i%2 == 0 {
				mine()
				ref()
			} else {
				ref()
				mine()
			}
			ratios = append(ratios, ours[i]/native[i])
		}
		mo, mn := median(ours), median(native)
		report("export %-6s n=%d batch=%d runs=%d  migctl %.0f rows/s  erlang rpc:call %.0f rows/s  ratio %.2fx, median of run ratios %.2fx (goal >= 1.0)",
			kind, n, batch, runs, mo, mn, mo/mn, median(ratios))
	}
}

// TestBenchExportRSS: peak RSS of the migctl binary exporting 1M sessions
// vs 100k (goal: flat).
func TestBenchExportRSS(t *testing.T) {
	want(t, "rss")
	big := envInt("BENCH_RSS_N", 1000000)
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	bin := filepath.Join(testkit.RepoRoot(), "bin", "migctl")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/migctl not built (make build)")
	}
	rss := map[int]int64{}
	prev := 0
	for _, n := range []int{100000, big} {
		file := filepath.Join(cl.Nodes[0].Dir, "rss.dets")
		// Seeding a million rows into DETS takes minutes here: call
		// with the bench's own deadline, not testkit's.
		r, err := cl.Client().Call(bctx(t), cl.Nodes[0].Name, "erlmcp_fixture_seed", "seed", erl.Atom("dets"),
			erl.Map{erl.Atom("file_path"): file, erl.Atom("table_name"): erl.Atom("rss_tab")}, n-prev, n)
		require.NoError(t, err)
		require.Equal(t, erl.Atom("ok"), r.(erl.Tuple)[0])
		prev = n
		out := filepath.Join(t.TempDir(), "rss.mexp")
		cmd := exec.Command(bin, "sessions", "export", "--store", "dets", "--table", "rss_tab", "--dets-file", file,
			"--nodes", cl.Nodes[0].Name, "--cookie-file", testkit.CookieFile(t), "--out", out, "-o", "json")
		outb, err := cmd.CombinedOutput()
		require.NoError(t, err, string(outb))
		rss[n] = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
		report("export rss n=%d  peak RSS %d MiB", n, rss[n]/1024)
	}
	report("export rss 100k %d MiB vs %d %d MiB  ratio %.2fx (goal: flat)", rss[100000]/1024, big, rss[big]/1024, float64(rss[big])/float64(rss[100000]))
}

func toInt(t any) int64 {
	switch v := t.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	}
	return 0
}
