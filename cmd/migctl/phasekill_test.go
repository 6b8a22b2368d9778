package main

import (
	"bufio"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// TestPhaseSetKilled: a real `migctl phase set` SIGKILLed in the middle of
// its commit, at the two points that matter on a Mnesia cluster: after
// the change is journaled but before any node switched, and after the
// replicated phase row changed. The next migctl finds the pending change,
// settles it from what the nodes report (aborted / committed), and the
// cluster is never left mixed.
func TestPhaseSetKilled(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_dets}", "{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase0}", "{session_cleanup_interval, infinity}"}})
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))

	show := func() migrate.ClusterStatus {
		t.Helper()
		res := run(t, env, "phase", "show", "-o", "json")
		require.Equal(t, 0, res.code, res.stderr)
		var st migrate.ClusterStatus
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &st))
		return st
	}
	// The change journaled with reason, as the journal holds it now.
	change := func(reason string) migrate.ChangeRecord {
		t.Helper()
		res := run(t, env, "journal", "--kind", migrate.KindPhaseChange, "-o", "json")
		require.Equal(t, 0, res.code, res.stderr)
		var es []journal.Entry
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &es))
		for _, e := range es {
			if e.Reason == reason {
				var rec migrate.ChangeRecord
				require.NoError(t, e.Decode(&rec))
				return rec
			}
		}
		t.Fatalf("no phase change %q in the journal: %s", reason, res.stdout)
		return migrate.ChangeRecord{}
	}

	for _, c := range []struct {
		step    string
		settled string        // what the next migctl records
		phase   migrate.Phase // where the cluster is afterwards
	}{
		{"commit:planned", "aborted", migrate.Phase0},
		{"commit:after-first", "committed", migrate.Phase1},
	} {
		t.Run(c.step, func(t *testing.T) {
			killAt(t, env, c.step, "phase", "set", "phase1", "--yes", "--reason", "killed at "+c.step)
			st := show()
			require.False(t, st.Mixed, "%+v", st)
			require.Equal(t, c.phase, st.Phase, "%+v", st)
			require.Equal(t, "planned", change("killed at "+c.step).State, "the killed run left its plan")
			// The next command that changes anything settles the change
			// first; `phase set` to where the cluster already is then
			// refuses, so set the other way round for the aborted case.
			if c.phase == migrate.Phase0 {
				res := run(t, env, "phase", "set", "phase1", "--yes", "--reason", "again")
				require.Equal(t, 0, res.code, res.stderr)
				res = run(t, env, "phase", "rollback", "--yes", "--reason", "back")
				require.Equal(t, 0, res.code, res.stderr)
			} else {
				res := run(t, env, "phase", "rollback", "--yes", "--reason", "back")
				require.Equal(t, 0, res.code, res.stderr)
			}
			killed := change("killed at " + c.step)
			require.Equal(t, c.settled, killed.State, "%+v", killed)
			require.Contains(t, killed.Note, "recovery")
			st = show()
			require.False(t, st.Mixed)
			require.Equal(t, migrate.Phase0, st.Phase)
		})
	}
}

// killAt runs migctl with MIGCTL_FAILPOINT=pause@STEP, waits until it says
// it paused there, and SIGKILLs it.
func killAt(t *testing.T, env []string, step string, args ...string) {
	t.Helper()
	cmd := migctl(t, append([]string{"MIGCTL_FAILPOINT=pause@" + step}, env...), args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	cmd.Stdout = io.Discard
	require.NoError(t, cmd.Start())
	done := false
	t.Cleanup(func() {
		if !done {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	paused := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var all []string
		for sc.Scan() {
			all = append(all, sc.Text())
			if strings.Contains(sc.Text(), "failpoint: paused at "+step) {
				paused <- ""
			}
		}
		paused <- strings.Join(all, "\n")
	}()
	select {
	case out := <-paused:
		require.Empty(t, out, "migctl ended before reaching %s:\n%s", step, out)
	case <-time.After(60 * time.Second):
		t.Fatalf("migctl did not reach %s", step)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	done = true
	require.Equal(t, -1, cmd.ProcessState.ExitCode(), "killed by a signal")
}

// TestPhaseSetKilledBetweenNodes: without Mnesia (ETS → DETS on three
// nodes, the phase kept per node), a `phase set` killed after the first
// node switched leaves the cluster mixed; `phase show` says so and exits
// non-zero, and the next `phase set` first puts the switched node back
// (recorded as reverted by recovery), then makes its own change.
func TestPhaseSetKilledBetweenNodes(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_ets}", "{secondary_backend, erlmcp_session_dets}",
			"{migration_phase, phase0}", "{session_cleanup_interval, infinity}"}})
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	killAt(t, env, "commit:node", "phase", "set", "phase1", "--yes", "--reason", "killed between nodes")

	res := run(t, env, "phase", "show", "-o", "json")
	var st migrate.ClusterStatus
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), res.stderr)
	require.True(t, st.Mixed, "one node switched, the others not: %+v", st)
	require.NotEqual(t, 0, res.code, "a mixed cluster is not a success")

	res = run(t, env, "phase", "set", "phase1", "--yes", "--reason", "after the kill")
	require.Equal(t, 0, res.code, res.stderr)
	res = run(t, env, "journal", "--kind", migrate.KindPhaseChange, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var es []journal.Entry
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &es))
	states := map[string]string{}
	for _, e := range es {
		var rec migrate.ChangeRecord
		require.NoError(t, e.Decode(&rec))
		states[e.Reason] = rec.State
	}
	require.Equal(t, "reverted", states["killed between nodes"])
	require.Equal(t, "committed", states["after the kill"])
	res = run(t, env, "phase", "show", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st))
	require.False(t, st.Mixed)
	require.Equal(t, migrate.Phase1, st.Phase)
}
