package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// TestPhaseCLI drives an ETS → DETS migration through the real binary:
// refusals and their exit codes, a backfill killed with SIGKILL and rerun
// (it resumes from the journal's checkpoint), phase changes, JSON output.
func TestPhaseCLI(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_ets}", "{secondary_backend, erlmcp_session_dets}",
			"{migration_phase, phase0}", "{session_cleanup_interval, infinity}"}})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("ets"), erl.Map{}, 20000, 7)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(20000)}, r)
	jpath := filepath.Join(t.TempDir(), "journal.db")
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+jpath)

	res := run(t, env, "phase", "show", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var st migrate.ClusterStatus
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st))
	require.Equal(t, migrate.Phase0, st.Phase)

	// Refusals: unknown phase (2), skip (5), no --yes without a terminal (5).
	res = run(t, env, "phase", "set", "phase7")
	require.Equal(t, 2, res.code, res.stderr)
	require.Contains(t, res.stderr, "unknown phase")
	res = run(t, env, "phase", "set", "phase2", "--percent", "10", "--yes")
	require.Equal(t, 5, res.code, res.stderr)
	require.Contains(t, res.stderr, "skips a phase")
	res = run(t, env, "phase", "set", "phase1")
	require.Equal(t, 5, res.code, res.stderr)
	require.Contains(t, res.stderr, "--yes")
	res = run(t, env, "phase", "set", "phase1", "--dry-run")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "dry-run")
	res = run(t, env, "phase", "show", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st))
	require.Equal(t, migrate.Phase0, st.Phase, "nothing changed")

	res = run(t, env, "phase", "set", "phase1", "--yes", "--reason", "e2e")
	require.Equal(t, 0, res.code, res.stderr)
	res = run(t, env, "backfill", "--from", "mnesia", "--to", "dets", "--yes")
	require.Equal(t, 2, res.code, "wrong direction: %s", res.stderr)

	// A backfill at 4,000 sessions/s takes ~5 s: SIGKILL it part-way.
	cmd := migctl(t, env, "backfill", "--from", "ets", "--to", "dets", "--yes", "--rate", "4000", "--batch", "200", "--no-throttle")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	type status struct {
		Progress []struct {
			migrate.BackfillProgress
			EffectiveState string  `json:"effective_state"`
			Scanned        int64   `json:"scanned"`
			Ratio          float64 `json:"ratio"`
		} `json:"progress"`
		Checkpoints map[string]migrate.Stats `json:"checkpoints"`
	}
	// Kill it once it has recorded a checkpoint and some progress (read
	// by `backfill status` while it runs: the journal is shared).
	require.Eventually(t, func() bool {
		res := run(t, env, "backfill", "status", "-o", "json")
		var bs status
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &bs) != nil {
			return false
		}
		return len(bs.Checkpoints) == 1 && len(bs.Progress) == 1 && bs.Progress[0].Scanned > 0
	}, 20*time.Second, 100*time.Millisecond, "no checkpoint and progress while the backfill runs: %s", se.String())
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed = true
	_ = cmd.Wait()

	res = run(t, env, "backfill", "status", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var bs status
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &bs))
	require.Len(t, bs.Checkpoints, 1, "a checkpoint survived the SIGKILL: %s", res.stdout)
	for _, s := range bs.Checkpoints {
		require.Positive(t, s.Scanned)
		require.Less(t, s.Scanned, int64(20000))
	}
	// The killed run never said it ended: its progress still reads
	// "running" (stalled once 30 s pass without an update), part-way.
	require.Len(t, bs.Progress, 1, res.stdout)
	require.Equal(t, "forward", bs.Progress[0].Direction)
	require.Equal(t, migrate.BackfillRunning, bs.Progress[0].State)
	require.EqualValues(t, 20000, bs.Progress[0].Total)
	require.Positive(t, bs.Progress[0].Scanned)
	require.Less(t, bs.Progress[0].Ratio, 1.0)
	require.Equal(t, migrate.BackfillStalled, bs.Progress[0].Effective(bs.Progress[0].Updated.Add(migrate.StallAfter+time.Second)))

	res = run(t, env, "phase", "set", "phase2", "--percent", "10", "--yes")
	require.Equal(t, 5, res.code, "gate: backfill not complete: %s", res.stderr)
	require.Contains(t, res.stdout+res.stderr, "backfill_complete")

	res = run(t, env, "backfill", "--from", "ets", "--to", "dets", "--yes", "-o", "json", "--no-throttle")
	require.Equal(t, 0, res.code, res.stderr)
	var rep migrate.BackfillReport
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep))
	require.True(t, rep.Record.Complete)
	require.True(t, rep.Record.Resumed, "resumed from the checkpoint")
	require.Positive(t, rep.Record.ResumedAt, "did not start over")
	// Without a terminal and at the default log level (warn), the resume
	// and the progress still show on stderr (a systemd unit, CI).
	require.Contains(t, res.stderr, `msg="resuming backfill from checkpoint"`)
	require.Contains(t, res.stderr, "msg=progress op=backfill")
	require.Contains(t, res.stderr, "final=true")
	require.Less(t, rep.Record.ResumedAt, int64(20000))
	t.Logf("killed after %d of 20000 sessions; the rerun resumed there", rep.Record.ResumedAt)
	n := cl.Call(0, "dets", "info", erl.Atom("erlmcp_sessions_dets"), erl.Atom("size"))
	require.EqualValues(t, 20000, n, "every session copied")
	res = run(t, env, "backfill", "status", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	bs = status{}
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &bs))
	require.Empty(t, bs.Checkpoints, "a complete backfill leaves no checkpoint")
	require.Len(t, bs.Progress, 1)
	require.Equal(t, migrate.BackfillDone, bs.Progress[0].EffectiveState)
	require.GreaterOrEqual(t, bs.Progress[0].Scanned, int64(20000), "the resumed run counts on from the checkpoint")

	for _, p := range []string{"10", "50", "100"} {
		res = run(t, env, "phase", "set", "phase2", "--percent", p, "--yes", "-o", "json")
		require.Equal(t, 0, res.code, res.stderr)
		var rec migrate.ChangeRecord
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &rec))
		require.Equal(t, "committed", rec.State)
	}
	// No reads yet in phase2: the phase3 gate has nothing to judge by.
	res = run(t, env, "phase", "set", "phase3", "--yes")
	require.Equal(t, 5, res.code, res.stderr)
	require.Contains(t, res.stdout, "read_error_rate")
	// --force overrides it, journaled as forced.
	res = run(t, env, "phase", "set", "phase3", "--yes", "--force", "--reason", "no traffic in the test")
	require.Equal(t, 0, res.code, res.stderr)
	res = run(t, env, "phase", "rollback", "--yes", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var rb RollbackResult
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rb))
	require.Equal(t, migrate.Phase2, rb.Change.To, res.stdout)
	require.True(t, rb.ReverseBackfill.Record.Complete)
	res = run(t, env, "phase", "show", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st))
	require.Equal(t, migrate.Phase2, st.Phase, res.stdout+res.stderr)

	res = run(t, env, "phase", "show")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "phase2")
	require.Contains(t, res.stdout, "ets:erlmcp_sessions_ets")
	t.Logf("phase show:\n%s", res.stdout)

	out := filepath.Join(t.TempDir(), "dets.tar.gz")
	res = run(t, env, "archive", "dets", "--out", out)
	require.Equal(t, 5, res.code, "no --yes without a terminal: %s", res.stderr)
	res = run(t, env, "archive", "dets", "--out", out, "--yes", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var arep migrate.ArchiveReport
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &arep))
	require.True(t, arep.Verified)
	require.NoError(t, migrate.VerifyArchive(out, nil))
	res = run(t, env, "archive", "dets", "--out", out, "--yes")
	require.Equal(t, 5, res.code, "an existing archive is not overwritten: %s", res.stderr)

	res = run(t, env, "journal", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var es []journal.Entry
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &es))
	kinds := map[string]int{}
	for _, e := range es {
		kinds[e.Kind]++
	}
	require.GreaterOrEqual(t, kinds[migrate.KindPhaseChange], 6)
	require.GreaterOrEqual(t, kinds[migrate.KindBackfill], 2) // the killed run left none: complete, reverse
}
