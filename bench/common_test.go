//go:build bench

// Package bench measures migctl against native Erlang doing the same work
// on the same nodes in the same run, and prints the ratios. Run with
// `make bench` (BENCH_N, BENCH_RUNS, BENCH_ONLY tune it). No assertions on
// time: these machines are shared and noisy, so it reports medians.
package bench

import (
	"context"
	"fmt"
	"github.com/erlmcp/migctl/erl"
	"github.com/stretchr/testify/require"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// want tells whether a bench was selected with BENCH_ONLY (comma list).
func want(t *testing.T, name string) {
	only := os.Getenv("BENCH_ONLY")
	if only == "" {
		return
	}
	for _, o := range strings.Split(only, ",") {
		if strings.TrimSpace(o) == name {
			return
		}
	}
	t.Skipf("not selected by BENCH_ONLY=%s", only)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(format string, a ...any) {
	fmt.Printf("BENCH "+format+"\n", a...)
}

// loadRef compiles bench_ref.erl and loads it on the given nodes.
func loadRef(t *testing.T, cl *testkit.Cluster, idx ...int) {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("erlc", "-o", dir, filepath.Join(testkit.RepoRoot(), "bench", "ref", "bench_ref.erl")).CombinedOutput()
	require.NoError(t, err, string(out))
	beam, err := os.ReadFile(filepath.Join(dir, "bench_ref.beam"))
	require.NoError(t, err)
	for _, i := range idx {
		r := cl.Call(i, "code", "load_binary", erl.Atom("bench_ref"), "bench_ref.beam", beam)
		require.Equal(t, erl.Atom("module"), r.(erl.Tuple)[0])
	}
}

func bctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	return c
}
