package scripts_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/testkit"
)

// rehearsal runs docs/runbook.md's commands, as an operator types them, on
// a dev cluster of its own (scripts/devcluster.sh in a state directory of
// the test), with the load generator on where the runbook has traffic.
type rehearsal struct {
	t       *testing.T
	state   string // DEVCLUSTER_STATE
	work    string // the operator's working directory (config/sys.config.*)
	backups string
	journal string
	env     []string
}

func newRehearsal(t *testing.T, journal string) *rehearsal {
	r := &rehearsal{t: t, state: filepath.Join(t.TempDir(), "dev"), work: t.TempDir(), backups: t.TempDir(),
		journal: filepath.Join(t.TempDir(), journal)}
	require.NoError(t, os.MkdirAll(filepath.Join(r.work, "config"), 0o755))
	// Whatever happens, the dev cluster goes (it stops exactly what it
	// started, by pid).
	t.Cleanup(func() {
		out, _ := r.exec(2*time.Minute, filepath.Join(testkit.RepoRoot(), "scripts", "devcluster.sh"), "down")
		t.Logf("devcluster down: %s", strings.TrimSpace(out))
	})
	return r
}

func (r *rehearsal) exec(timeout time.Duration, bin string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.work
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + r.work,
		"MIGCTL=" + migctlBin,
		"DEVCLUSTER_STATE=" + r.state,
		"MIGCTL_JOURNAL=" + r.journal,
	}, r.env...)
	out, code, err := combined(cmd)
	if err != nil {
		return out + err.Error(), -1
	}
	return out, code
}

// dc runs scripts/devcluster.sh; it must succeed.
func (r *rehearsal) dc(args ...string) string {
	r.t.Helper()
	out, code := r.exec(3*time.Minute, filepath.Join(testkit.RepoRoot(), "scripts", "devcluster.sh"), args...)
	require.Equal(r.t, 0, code, "devcluster.sh %s:\n%s", strings.Join(args, " "), out)
	if args[0] == "up" {
		// The environment `source .devcluster/env` gives an operator.
		b, err := os.ReadFile(filepath.Join(r.state, "env"))
		require.NoError(r.t, err)
		r.env = nil
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "export "); ok {
				r.env = append(r.env, v)
			}
		}
	}
	return out
}

// script runs a runbook wrapper of scripts/ and checks its exit code.
func (r *rehearsal) script(want int, name string, args ...string) string {
	r.t.Helper()
	out, code := r.exec(3*time.Minute, filepath.Join(testkit.RepoRoot(), "scripts", name), args...)
	r.t.Logf("$ %s %s -> %d", name, strings.Join(args, " "), code)
	require.Equal(r.t, want, code, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return out
}

// mig runs migctl and checks its exit code (the runbook's documented one).
func (r *rehearsal) mig(want int, args ...string) string {
	r.t.Helper()
	out, code := r.exec(3*time.Minute, migctlBin, args...)
	r.t.Logf("$ migctl %s -> %d", strings.Join(args, " "), code)
	require.Equal(r.t, want, code, "migctl %s:\n%s", strings.Join(args, " "), out)
	return out
}

// migJSON runs migctl with -o json and decodes the answer.
func (r *rehearsal) migJSON(want int, v any, args ...string) {
	r.t.Helper()
	out := r.mig(want, append(args, "-o", "json")...)
	require.NoError(r.t, json.Unmarshal([]byte(out[strings.Index(out, "{"):]), v), out)
}

func (r *rehearsal) sysConfig(env, text string) {
	require.NoError(r.t, os.WriteFile(filepath.Join(r.work, "config", "sys.config."+env), []byte(text), 0o644))
}

// TestRunbookRehearsal walks docs/runbook.md on the dev cluster as a
// newcomer would: the ETS → DETS half on one node, then DETS → Mnesia on
// three nodes with clients on every node, forward to phase3, the way back
// from phase3, and forward again, asserting each documented exit code and,
// at the end, 0 lost / wrong / resurrected and stores that agree.
func TestRunbookRehearsal(t *testing.T) {
	testkit.RequireErlang(t) // devcluster.sh starts real nodes
	t.Run("ets-to-dets", func(t *testing.T) {
		r := newRehearsal(t, "ets.db")
		r.dc("up", "--nodes", "1", "--backend", "ets")
		r.dc("seed", "--store", "ets", "--count", "2000")
		node := "migctl_dev1@127.0.0.1"

		// 1. Look at the node.
		r.mig(0, "ping")
		// 2. Deploy the hybrid in phase0. ETS does not survive the restart:
		// export first, put back after.
		exp := filepath.Join(r.backups, "erlmcp", "ets-before-restart.mexp")
		r.mig(0, "sessions", "export", "--store", "ets", "--out", exp)
		r.sysConfig("test", `[{erlmcp_core, [
  {session_backend, erlmcp_session_backend_hybrid},
  {migration_phase, phase0},
  {primary_backend, erlmcp_session_ets},
  {secondary_backend, erlmcp_session_dets},
  {dets_dir, "/var/lib/erlmcp/dets"}
]}].
`)
		r.script(0, "deploy_config.sh", "test", "--yes", "--reason", "rehearsal: deploy the hybrid")
		r.mig(0, "sessions", "import", "--store", "ets", "--in", exp, "--mode", "if_absent", "--yes")
		var cnt struct {
			Count int64 `json:"count"`
		}
		r.migJSON(0, &cnt, "sessions", "count", "--store", "ets")
		require.EqualValues(t, 2000, cnt.Count)
		r.dc("load", "start", "--rate", "200", "--keyspace", "1000")

		// 3.-6. phase1, backfill, check, phase2, phase3.
		r.mig(0, "phase", "set", "phase1", "--yes", "--reason", "rehearsal: ETS to DETS")
		r.mig(0, "backfill", "--from", "ets", "--to", "dets", "--yes", "--reason", "rehearsal")
		r.mig(0, "consistency", "check", "--source", "ets", "--target", "dets", "--full")
		r.mig(0, "phase", "set", "phase2", "--percent", "100", "--yes", "--reason", "rehearsal: reads from DETS")
		time.Sleep(3 * time.Second)
		// A dev cluster's traffic gives hundreds of reads, not the default
		// 10,000: the gate says so (exit 5), and is given a smaller minimum.
		r.mig(5, "phase", "set", "phase3", "--yes", "--reason", "rehearsal: DETS only")
		r.mig(0, "phase", "set", "phase3", "--yes", "--min-reads", "100", "--reason", "rehearsal: DETS only")
		time.Sleep(time.Second)
		stats := r.dc("load", "stop")
		t.Logf("load: %s", stats)
		r.dc("load", "verify", "--store", "dets")

		// 7. Verify persistence: the dev cluster restarts the node keeping
		// its data and cookie.
		r.mig(0, "verify", "persistence", "--node", node, "--restart-cmd",
			filepath.Join(testkit.RepoRoot(), "scripts", "devcluster.sh")+" restart 1", "--yes", "--reason", "rehearsal")
	})

	t.Run("dets-to-mnesia", func(t *testing.T) {
		r := newRehearsal(t, "mnesia.db")
		r.dc("up", "--nodes", "3", "--backend", "dets")
		r.dc("seed", "--store", "dets", "--count", "6000", "--all-nodes")
		nodes := []string{"migctl_dev1@127.0.0.1", "migctl_dev2@127.0.0.1", "migctl_dev3@127.0.0.1"}

		// Phase 0: look, back up every node's DETS, schema, tables, the
		// hybrid in phase0.
		r.mig(0, "ping")
		for _, n := range nodes {
			r.mig(0, "sessions", "export", "--store", "dets", "--node", n,
				"--out", filepath.Join(r.backups, "dets-"+strings.Split(n, "@")[0]+".mexp"))
		}
		r.mig(0, "schema", "create", "--yes", "--reason", "rehearsal: DETS to Mnesia")
		r.mig(0, "tables", "create", "--yes", "--reason", "rehearsal")
		r.sysConfig("staging", `[{erlmcp_core, [
  {session_backend, erlmcp_session_backend_hybrid},
  {migration_phase, phase0},
  {primary_backend, erlmcp_session_dets},
  {secondary_backend, erlmcp_session_mnesia}
]}].
`)
		r.script(0, "deploy_config.sh", "staging", "--yes", "--reason", "rehearsal: the hybrid in phase0")
		r.mig(0, "phase", "show")
		r.dc("load", "start", "--rate", "150", "--keyspace", "1500")
		time.Sleep(2 * time.Second)

		// Phase 1: dual-write, backfill, check.
		r.mig(0, "phase", "set", "phase1", "--yes", "--reason", "rehearsal: dual-write")
		r.mig(5, "phase", "set", "phase2", "--percent", "10", "--yes") // no backfill yet
		r.mig(0, "backfill", "--from", "dets", "--to", "mnesia", "--yes", "--reason", "rehearsal backfill")
		r.mig(0, "consistency", "check", "--source", "dets", "--target", "mnesia", "--full")

		// Phase 2: 10, 50, 100 %.
		for _, p := range []string{"10", "50", "100"} {
			r.mig(0, "phase", "set", "phase2", "--percent", p, "--yes", "--reason", "rehearsal "+p+" %")
			time.Sleep(time.Second)
		}
		time.Sleep(2 * time.Second)
		// Phase 3, then the way back, then forward again.
		r.mig(0, "phase", "set", "phase3", "--yes", "--min-reads", "100", "--reason", "rehearsal: cut-over")
		time.Sleep(3 * time.Second)
		r.mig(0, "phase", "rollback", "--dry-run")
		r.mig(0, "phase", "rollback", "--yes", "--reason", "rehearsal: way back")
		r.mig(0, "consistency", "check", "--source", "dets", "--target", "mnesia", "--full")
		r.mig(0, "phase", "rollback", "--yes", "--reason", "rehearsal: back to phase1")
		time.Sleep(2 * time.Second)
		r.mig(0, "backfill", "--from", "dets", "--to", "mnesia", "--yes", "--reason", "rehearsal: forward again")
		r.mig(0, "phase", "set", "phase2", "--percent", "100", "--yes", "--reason", "rehearsal")
		time.Sleep(3 * time.Second)
		r.mig(0, "phase", "set", "phase3", "--yes", "--min-reads", "100", "--reason", "rehearsal: cut-over again")
		time.Sleep(time.Second)
		r.mig(0, "archive", "dets", "--yes", "--out", filepath.Join(r.backups, "dets_archive.tar.gz"), "--reason", "rehearsal")
		r.mig(0, "cluster", "verify-replication")

		stats := r.dc("load", "stop")
		t.Logf("load: %s", stats)
		// Every acknowledged write in Mnesia, every acknowledged delete
		// absent (exit 1 on any lost, wrong or resurrected session).
		out := r.dc("load", "verify", "--store", "mnesia")
		t.Logf("verify: %s", out)
	})
}
