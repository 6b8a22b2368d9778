package benchkit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/migrate"
)

// ErrNotHybrid: the node does not run the hybrid backend a bench needs.
var ErrNotHybrid = errors.New("the node must run the hybrid backend DETS -> Mnesia")

// BackfillBench compares migctl's backfill with a native in-node copy.
type BackfillBench struct {
	Node             string  `json:"node"`
	Sessions         int64   `json:"sessions"`
	NativeSeconds    float64 `json:"native_seconds"`
	NativeRowsPerSec float64 `json:"native_rows_per_sec"`
	MigctlSeconds    float64 `json:"migctl_seconds"`
	MigctlRowsPerSec float64 `json:"migctl_rows_per_sec"`
	// Ratio is migctl / native (goal >= 0.9).
	Ratio float64 `json:"ratio"`
	// RunRatios are migctl/native of each round.
	RunRatios []float64 `json:"run_ratios"`
}

// String is the line a harness prints.
func (b BackfillBench) String() string {
	return fmt.Sprintf("backfill of %d sessions DETS -> Mnesia: native %.0f rows/s (%.1fs), migctl %.0f rows/s (%.1fs), ratio %.2f (goal >= 0.9; rounds %.2f)",
		b.Sessions, b.NativeRowsPerSec, b.NativeSeconds, b.MigctlRowsPerSec, b.MigctlSeconds, b.Ratio, b.RunRatios)
}

// hybridSides returns node's DETS and Mnesia tables.
func hybridSides(ctx context.Context, m *migrate.Migrator, node string) (dets, mnesia string, err error) {
	st, err := m.ShowPhase(ctx)
	if err != nil {
		return "", "", err
	}
	for _, n := range st.Nodes {
		if n.Node == node && n.Installed && n.Primary.Kind == "dets" && n.Secondary.Kind == "mnesia" {
			return n.Primary.Table, n.Secondary.Table, nil
		}
	}
	return "", "", fmt.Errorf("%w: %s", ErrNotHybrid, node)
}

// BenchBackfill copies the DETS primary of node into the Mnesia secondary
// with a plain Erlang loop on the node using the same write method
// (dets:select chunks of batch, one transaction per chunk under a table
// write lock, written when absent or newer), and with m.Backfill
// (throttling off), clearing the table before each run; rounds alternate
// the two and the medians are reported (this machine's noise is 20-40 %
// between runs). The cluster must run the hybrid DETS -> Mnesia at phase1
// with the data in node's DETS file and nothing else writing.
func BenchBackfill(ctx context.Context, c *erl.Client, m *migrate.Migrator, node string, batch, rounds int) (BackfillBench, error) {
	r := BackfillBench{Node: node}
	dets, mn, err := hybridSides(ctx, m, node)
	if err != nil {
		return r, err
	}
	if rounds <= 0 {
		rounds = 1
	}
	tab := erl.Atom(mn)
	// Empty the table, then make every node dump its Mnesia log, so that
	// neither run pays for dumping the other's writes.
	clear := func() error {
		if _, err := c.Call(ctx, node, "mnesia", "clear_table", tab); err != nil {
			return err
		}
		for _, n := range m.Nodes() {
			if _, err := c.Call(ctx, n, "mnesia", "dump_log"); err != nil {
				return err
			}
		}
		return nil
	}
	var native, mig []float64
	runNative := func() error {
		if err := clear(); err != nil {
			return err
		}
		rows, took, err := agentapi.Migrate{C: c}.NativeCopy(ctx, node, dets, mn, batch)
		if err != nil {
			return err
		}
		r.Sessions = rows
		native = append(native, took.Seconds())
		return nil
	}
	runMigctl := func() error {
		if err := clear(); err != nil {
			return err
		}
		rep, err := m.Backfill(ctx, migrate.BackfillOptions{BatchSize: batch, NoThrottle: true, Restart: true, Reason: "benchmark"})
		if err != nil {
			return err
		}
		if rep.Record.Stats.Scanned != r.Sessions {
			return fmt.Errorf("benchmark: the backfill scanned %d sessions, the native loop %d", rep.Record.Stats.Scanned, r.Sessions)
		}
		mig = append(mig, rep.Record.Seconds)
		return nil
	}
	for i := 0; i < rounds; i++ {
		// The order turns each round, so that a neighbour's load that
		// comes and goes does not fall on one of them only. (The first
		// round runs native first: it sets r.Sessions.)
		first, second := runNative, runMigctl
		if i%2 == 1 {
			first, second = runMigctl, runNative
		}
		if err := first(); err != nil {
			return r, err
		}
		if err := second(); err != nil {
			return r, err
		}
		r.RunRatios = append(r.RunRatios, native[i]/mig[i])
	}
	r.NativeSeconds, r.MigctlSeconds = median(native), median(mig)
	if r.NativeSeconds > 0 {
		r.NativeRowsPerSec = float64(r.Sessions) / r.NativeSeconds
	}
	if r.MigctlSeconds > 0 {
		r.MigctlRowsPerSec = float64(r.Sessions) / r.MigctlSeconds
	}
	if r.NativeRowsPerSec > 0 {
		r.Ratio = r.MigctlRowsPerSec / r.NativeRowsPerSec
	}
	return r, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// PhaseBench is the time phase changes took to commit.
type PhaseBench struct {
	Nodes    int       `json:"nodes"`
	Changes  int       `json:"changes"`
	CommitMs []float64 `json:"commit_ms"`
	P50Ms    float64   `json:"p50_ms"`
	MaxMs    float64   `json:"max_ms"`
	// TotalMs includes planning and gates (status of every node, journal).
	TotalP50Ms float64 `json:"total_p50_ms"`
}

// String is the line a harness prints.
func (p PhaseBench) String() string {
	return fmt.Sprintf("phase set on %d nodes: commit p50 %.1f ms, max %.1f ms (whole command p50 %.1f ms) over %d changes",
		p.Nodes, p.P50Ms, p.MaxMs, p.TotalP50Ms, p.Changes)
}

// BenchPhaseSet switches phase2's percentage back and forth n times (a
// commit with no gate) and measures each commit. The cluster must be at
// phase2; the caller runs the load and counts its failed operations.
func BenchPhaseSet(ctx context.Context, m *migrate.Migrator, n int) (PhaseBench, error) {
	r := PhaseBench{Nodes: len(m.Nodes())}
	var totals []float64
	for i := 0; i < n; i++ {
		pct := 50
		if i%2 == 1 {
			pct = 100
		}
		t0 := time.Now()
		rec, err := m.SetPhase(ctx, migrate.Phase2, migrate.ChangeOptions{Percent: pct, Reason: "benchmark"})
		if err != nil {
			return r, err
		}
		totals = append(totals, float64(time.Since(t0).Microseconds())/1000)
		r.CommitMs = append(r.CommitMs, rec.CommitMs)
	}
	r.Changes = n
	s := append([]float64(nil), r.CommitMs...)
	sort.Float64s(s)
	sort.Float64s(totals)
	if len(s) > 0 {
		r.P50Ms, r.MaxMs, r.TotalP50Ms = s[len(s)/2], s[len(s)-1], totals[len(totals)/2]
	}
	return r, nil
}

// LatencyBench is the hybrid's cost in phase1, in microseconds.
type LatencyBench struct {
	Node string             `json:"node"`
	N    int                `json:"n"`
	P50  map[string]float64 `json:"p50_us"`
	P99  map[string]float64 `json:"p99_us"`
	// Overhead is hybrid / both-writes-by-hand - 1 for store and fetch
	// at p50 (goal <= 0.10).
	Overhead map[string]float64 `json:"overhead_vs_both"`
}

// String is the line a harness prints.
func (l LatencyBench) String() string {
	return fmt.Sprintf("phase1 latency p50/p99 us (n=%d): store hybrid %.0f/%.0f, primary alone %.0f/%.0f, both by hand %.0f/%.0f (overhead %+.0f%%); fetch hybrid %.0f/%.0f, primary alone %.0f/%.0f, both by hand %.0f/%.0f (overhead %+.0f%%)",
		l.N, l.P50["hybrid_store"], l.P99["hybrid_store"], l.P50["primary_store"], l.P99["primary_store"],
		l.P50["both_store"], l.P99["both_store"], l.Overhead["store"]*100,
		l.P50["hybrid_fetch"], l.P99["hybrid_fetch"], l.P50["primary_fetch"], l.P99["primary_fetch"],
		l.P50["both_fetch"], l.P99["both_fetch"], l.Overhead["fetch"]*100)
}

// BenchHybridLatency measures, on node, store and fetch latencies of the
// hybrid backend (called directly as the store server does), of the
// primary alone and of both writes done by hand (n sessions each). The
// node must run the hybrid DETS -> Mnesia at phase1.
func BenchHybridLatency(ctx context.Context, c *erl.Client, node string, n int) (LatencyBench, error) {
	r := LatencyBench{Node: node, N: n, P50: map[string]float64{}, P99: map[string]float64{}, Overhead: map[string]float64{}}
	ls, err := agentapi.Migrate{C: c}.BenchLatency(ctx, node, n)
	if err != nil {
		return r, err
	}
	for _, l := range ls {
		r.P50[l.Name], r.P99[l.Name] = l.P50, l.P99
	}
	for _, op := range []string{"store", "fetch"} {
		if b := r.P50["both_"+op]; b > 0 {
			r.Overhead[op] = r.P50["hybrid_"+op]/b - 1
		}
	}
	return r, nil
}
