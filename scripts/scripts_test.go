// Package scripts_test runs the runbook wrapper scripts of scripts/
// (create_mnesia_schema.sh, check_mnesia_health.sh, ...) against real
// Erlang nodes (testkit) with a migctl binary built for the test, and
// checks their exit codes and output, including the failing cases the
// runbook's `if` blocks rely on (a refused change, a partitioned cluster,
// copies that differ).
package scripts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/erlmcp/migctl/erl"
	"github.com/stretchr/testify/require"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erlmcp/migctl/testkit"
)

var migctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "migctl-scripts-")
	if err != nil {
		panic(err)
	}
	migctlBin = filepath.Join(dir, "migctl")
	build := exec.Command("go", "build", "-o", migctlBin, "./cmd/migctl")
	build.Dir = testkit.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := testkit.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	out  string // stdout and stderr
	code int
}

// env is the environment of the scripts for one cluster.
type env struct {
	t       *testing.T
	nodes   []string
	journal string
}

func newEnv(t *testing.T, nodes []string) *env {
	return &env{t: t, nodes: nodes, journal: filepath.Join(t.TempDir(), "journal.db")}
}

// run runs scripts/NAME with args (no terminal) and returns its output
// and exit code.
func (e *env) run(name string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testkit.RepoRoot(), "scripts", name), args...)
	cmd.Dir = e.t.TempDir()
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.t.TempDir(),
		"MIGCTL=" + migctlBin,
		"MIGCTL_NODES=" + strings.Join(e.nodes, ","),
		"MIGCTL_COOKIE_FILE=" + testkit.CookieFile(e.t),
		"ERL_EPMD_PORT=" + strconv.Itoa(testkit.EPMDPort(e.t)),
		"MIGCTL_JOURNAL=" + e.journal,
	}
	out, code, err := combined(cmd)
	if err != nil {
		e.t.Fatalf("%s: %v", name, err)
	}
	e.t.Logf("$ %s %s -> exit %d\n%s", name, strings.Join(args, " "), code, out)
	return result{out: out, code: code}
}

// combined runs cmd and returns its stdout and stderr together and its
// exit code; err is set only when it could not run at all.
func combined(cmd *exec.Cmd) (string, int, error) {
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return b.String(), ee.ExitCode(), nil
	}
	return b.String(), 0, err
}

// migctl runs the migctl binary itself in the same environment.
func (e *env) migctl(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, migctlBin, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.t.TempDir(),
		"MIGCTL_NODES=" + strings.Join(e.nodes, ","),
		"MIGCTL_COOKIE_FILE=" + testkit.CookieFile(e.t),
		"ERL_EPMD_PORT=" + strconv.Itoa(testkit.EPMDPort(e.t)),
		"MIGCTL_JOURNAL=" + e.journal,
	}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("migctl: %v", err)
	}
	e.t.Logf("$ migctl %s -> exit %d\n%s", strings.Join(args, " "), code, out)
	return result{out: string(out), code: code}
}

// requireSeeded checks erlmcp_fixture_seed:seed/4's {ok, N} (ergo decodes
// small integers as int, larger ones as int64).
func requireSeeded(t *testing.T, r erl.Term, n int) {
	t.Helper()
	tt, ok := r.(erl.Tuple)
	require.True(t, ok && len(tt) == 2 && tt[0] == erl.Atom("ok"), "seed: %v", r)
	require.Equal(t, fmt.Sprint(n), fmt.Sprint(tt[1]), "seed: %v", r)
}

func hybridEnv(phase string) []string {
	return []string{
		"{primary_backend, erlmcp_session_dets}",
		"{secondary_backend, erlmcp_session_mnesia}",
		"{migration_phase, " + phase + "}",
		"{session_cleanup_interval, infinity}",
	}
}

// TestRunbookScripts walks the runbook on 3 bare nodes through the
// wrappers: schema, tables, deploy_config, phase changes (one refused by
// its gate), the health and replication checks on a healthy cluster, then
// on a partitioned one with copies that differ (non-zero exits), and
// again after a heal.
func TestRunbookScripts(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 3})
	e := newEnv(t, tk.Names())
	n := tk.Names()

	// Phase 0: schema and tables.
	r := e.run("create_mnesia_schema.sh", append(append([]string{}, n...), "--dry-run")...)
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "dry-run")
	r = e.run("create_mnesia_schema.sh", n...)
	require.Equal(t, 5, r.code, "no terminal and no --yes: refused")
	r = e.run("create_mnesia_schema.sh", append(append([]string{}, n...), "--yes", "--reason", "test")...)
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "created")
	r = e.run("create_mnesia_schema.sh", append(append([]string{}, n...), "--yes")...)
	require.Equal(t, 5, r.code, "an existing schema is never touched")

	r = e.run("create_mnesia_tables.sh", "erlmcp_session", "some_other_table", "--yes")
	require.Equal(t, 2, r.code)
	r = e.run("create_mnesia_tables.sh", "erlmcp_session", "erlmcp_state", "--yes", "--reason", "test")
	require.Equal(t, 0, r.code)
	require.Regexp(t, `(?m)^erlmcp_session +created$`, r.out)
	require.Regexp(t, `(?m)^migctl_migration +created$`, r.out)
	require.Regexp(t, `(?m)^result +done$`, r.out)

	// erlmcp deployed with the hybrid backend in phase0.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, node := range tk.Nodes {
		require.NoError(t, node.StartApp(ctx, "erlmcp_session_backend_hybrid", hybridEnv("phase0")...))
	}

	// deploy_config.sh: without a phase it shows the cluster's; with the
	// runbook's sys.config it applies the config's phase.
	r = e.run("deploy_config.sh", "--yes")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "phase0")
	cfg := filepath.Join(t.TempDir(), "sys.config.staging")
	require.NoError(t, os.WriteFile(cfg, []byte(`[{erlmcp_core, [
  {session_backend, erlmcp_session_backend_hybrid},
  {migration_phase, phase1},
  {primary_backend, erlmcp_session_dets},
  {secondary_backend, erlmcp_session_mnesia}
]}].
`), 0o644))
	r = e.run("deploy_config.sh", cfg, "--dry-run")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "phase0/100% -> phase1/100%")
	r = e.run("deploy_config.sh", cfg, "--yes", "--reason", "test")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "committed")
	r = e.run("deploy_config.sh", filepath.Join(t.TempDir(), "missing"))
	require.Equal(t, 2, r.code)

	// Phase 2 before the backfill: the gate refuses (exit 5), the
	// runbook's `if` must not go on.
	r = e.run("update_migration_phase.sh", "phase2", "--percent", "10", "--yes")
	require.Equal(t, 5, r.code)
	r = e.run("update_migration_phase.sh")
	require.Equal(t, 2, r.code)
	require.Equal(t, 0, e.migctl("backfill", "--from", "dets", "--to", "mnesia", "--yes", "--reason", "test").code)
	r = e.run("update_migration_phase.sh", "phase2", "--percent", "10", "--yes", "--reason", "test")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "committed")
	r = e.run("deploy_config.sh")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "phase2")

	// The phase1 monitor, briefly: both stores empty, no mismatch.
	r = e.run("monitor_consistency.sh", "--duration=3s", "--interval=1s", "--alert-on-mismatch=true", "--metrics-addr=")
	require.Equal(t, 0, r.code)

	// A healthy cluster with data.
	seed := tk.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 500, 42)
	requireSeeded(t, seed, 500)
	r = e.run("check_mnesia_health.sh")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "HEALTHY")
	r = e.run("check_mnesia_partitions.sh")
	require.Equal(t, 0, r.code)
	r = e.run("verify_mnesia_replication.sh")
	require.Equal(t, 0, r.code)
	for _, node := range n {
		require.Contains(t, r.out, "Node: "+node+", Table size: 500\n")
	}
	require.Contains(t, r.out, "✅ All nodes consistent")
	require.NotContains(t, r.out, "Checksum")
	r = e.run("verify_mnesia_replication.sh", "-o", "json")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, `"consistent": true`)
	r = e.run("verify_mnesia_cluster.sh")
	require.Equal(t, 0, r.code)

	// Split brain: node 3 cut off, and writes on the larger side only.
	tk.Partition([]int{0, 1}, []int{2})
	seed = tk.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 50, 7)
	requireSeeded(t, seed, 50)
	r = e.run("check_mnesia_health.sh")
	require.Equal(t, 7, r.code)
	require.Contains(t, r.out, "PARTITIONED")
	r = e.run("check_mnesia_partitions.sh")
	require.Equal(t, 7, r.code)
	require.Contains(t, r.out, "WINNER", "the heal plan is shown")
	r = e.run("verify_mnesia_cluster.sh")
	require.Equal(t, 7, r.code)
	r = e.run("verify_mnesia_replication.sh")
	require.Equal(t, 4, r.code)
	require.Contains(t, r.out, "❌ INCONSISTENT: "+n[2])
	require.NotContains(t, r.out, "All nodes consistent")

	// Healed, the cluster verifies again.
	require.Equal(t, 0, e.migctl("cluster", "heal", "--execute", "--yes", "--reason", "test").code)
	r = e.run("verify_mnesia_cluster.sh")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "All nodes consistent")
	r = e.run("verify_mnesia_replication.sh")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "Table size: 550\n")

	// A node that is down: degraded, and the checks say so.
	tk.Nodes[2].Kill()
	r = e.run("check_mnesia_health.sh")
	require.Equal(t, 6, r.code)
	require.Contains(t, r.out, "DEGRADED")
	r = e.run("verify_mnesia_cluster.sh")
	require.Equal(t, 6, r.code)
}

// TestScaleMnesiaCluster adds a third node to a 2-node Mnesia cluster.
func TestScaleMnesiaCluster(t *testing.T) {
	tk := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	seed := tk.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 300, 1)
	requireSeeded(t, seed, 300)
	extra := testkit.Start(t, testkit.Options{Nodes: 1})
	newNode := extra.Nodes[0].Name
	e := newEnv(t, tk.Names())

	r := e.run("scale_mnesia_cluster.sh", "--add-node")
	require.Equal(t, 2, r.code)
	r = e.run("scale_mnesia_cluster.sh", "--add-node", newNode, "--dry-run")
	require.Equal(t, 0, r.code)
	r = e.run("scale_mnesia_cluster.sh", "--add-node", newNode, "--yes", "--reason", "test")
	require.Equal(t, 0, r.code)

	all := newEnv(t, append(tk.Names(), newNode))
	r = all.run("verify_mnesia_replication.sh")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.out, "Node: "+newNode+", Table size: 300\n")
	r = all.run("check_mnesia_health.sh")
	require.Equal(t, 0, r.code)

	r = e.run("scale_mnesia_cluster.sh", "--remove-node="+newNode, "--yes", "--reason", "test")
	require.Equal(t, 0, r.code)
	r = e.run("check_mnesia_health.sh")
	require.Equal(t, 0, r.code)
}

// TestWrappersNeedMigctl: a missing binary is bad input (exit 2), before
// anything is contacted.
func TestWrappersNeedMigctl(t *testing.T) {
	for _, s := range []string{"create_mnesia_schema.sh", "check_mnesia_health.sh", "verify_mnesia_replication.sh",
		"update_migration_phase.sh", "create_mnesia_tables.sh", "monitor_consistency.sh", "check_mnesia_partitions.sh",
		"verify_mnesia_cluster.sh", "scale_mnesia_cluster.sh", "deploy_config.sh"} {
		cmd := exec.Command(filepath.Join(testkit.RepoRoot(), "scripts", s))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "MIGCTL=" + filepath.Join(t.TempDir(), "nothing")}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "%s: %v", s, err)
		require.Equal(t, 2, ee.ExitCode(), "%s: %s", s, out)
		require.Contains(t, string(out), "migctl not found", s)
	}
}
