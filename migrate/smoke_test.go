package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// TestETSToDETS walks a single node from ETS to DETS under load and checks
// that nothing acknowledged is lost.
func TestETSToDETS(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase0")})
	ctx := tctx(t, 120*time.Second)
	j := newJournal(t)
	m := newMigrator(t, cl, j)
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Ready())
	require.Equal(t, Phase0, st.Phase)
	require.Equal(t, "file", st.Mode)

	startLoad(t, cl, 500, 2000)
	defer closeLoad(cl)
	time.Sleep(1500 * time.Millisecond)

	_, err = m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.ErrorIs(t, err, ErrGate, "phase2 needs a backfill")
	dry, err := m.Backfill(ctx, BackfillOptions{BatchSize: 200, DryRun: true})
	require.NoError(t, err)
	require.Positive(t, dry.Record.Stats.Written, "dry-run counts what it would copy")
	n := cl.Call(0, "dets", "info", erl.Atom("erlmcp_sessions_dets"), erl.Atom("size"))
	require.Less(t, erl.Int64(n), dry.Record.Stats.Scanned, "and copies nothing")
	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 200})
	require.NoError(t, err)
	t.Logf("backfill: %+v", rep.Record.Stats)
	checkProgressMetrics(t, j, rep)
	// A secondary write failure after the backfill started: phase2 waits
	// for another backfill (the failure is simulated on the counter).
	cl.Eval(0, `counters:add(persistent_term:get({erlmcp_session_backend_hybrid, counters}), 6, 1)`, nil)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.ErrorIs(t, err, ErrGate)
	require.Contains(t, err.Error(), "secondary write failure")
	rep, err = m.Backfill(ctx, BackfillOptions{BatchSize: 200})
	require.NoError(t, err)
	for _, p := range []int{10, 50, 100} {
		_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: p})
		require.NoError(t, err)
		time.Sleep(500 * time.Millisecond)
	}
	// A short test: the gate wants 100 secondary reads since phase2 began.
	// On a loaded machine the load generator may not have made them yet:
	// wait for the traffic (the gate's own "not enough reads" answer),
	// never for anything else.
	var rec *ChangeRecord
	for deadline := time.Now().Add(30 * time.Second); ; {
		rec, err = m.SetPhase(ctx, Phase3, ChangeOptions{MinReads: 100})
		if err == nil || !errors.Is(err, ErrGate) || !strings.Contains(err.Error(), "not enough reads") || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	require.NoError(t, err, "%+v", rec)
	time.Sleep(500 * time.Millisecond)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))
	v := verifyLoad(t, cl, "{dets, erlmcp_sessions_dets}")
	t.Logf("verify: %s", describe(v[0]))
	require.Zero(t, mapInt(v[0], "lost"))
	require.Zero(t, mapInt(v[0], "wrong_value"))
	require.Zero(t, mapInt(v[0], "resurrected"))
	require.Zero(t, mapInt(stats[0], "errors"))
	closeLoad(cl)

	// Archive the DETS files, read directly and streamed through the node.
	for _, remote := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "dets.tar.gz")
		arep, err := m.ArchiveDETS(ctx, ArchiveOptions{Out: out, Remote: remote, Reason: "test"})
		require.NoError(t, err)
		require.True(t, arep.Verified)
		require.Len(t, arep.Files, 2, "%+v", arep.Files) // sessions + phase file
		require.NoError(t, VerifyArchive(out, arep.Files))
		_, err = m.ArchiveDETS(ctx, ArchiveOptions{Out: out})
		require.ErrorIs(t, err, ErrExists, "never overwrites an archive")
	}

	// Restart the node: the sessions come back from DETS, and the phase
	// recorded next to them (phase3) wins over the config file (phase0).
	node := cl.Nodes[0]
	prep, err := m.VerifyPersistence(ctx, PersistOptions{Reason: "test", Restart: func(ctx context.Context) error {
		if err := node.Restart(ctx); err != nil {
			return err
		}
		return node.StartApp(ctx, "erlmcp_session_backend_hybrid", hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase0")...)
	}})
	require.NoError(t, err)
	require.True(t, prep.Restored)
	require.Positive(t, prep.Before.Count)
	t.Logf("persistence: %+v", prep)
	st, err = m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Equal(t, Phase3, st.Phase, "the phase survived the restart")
	_ = erl.Atom("")
}

// checkProgressMetrics: the journal holds the finished backfill's progress
// and the collector the monitor registers exports it, in a form promtool
// accepts.
func checkProgressMetrics(t *testing.T, j *journal.Journal, rep *BackfillReport) {
	t.Helper()
	ps, err := ReadBackfillProgress(j)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	p := ps[0]
	require.Equal(t, "forward", p.Direction)
	require.Equal(t, BackfillDone, p.Effective(time.Now().Add(time.Hour)), "a finished backfill never turns stalled")
	require.Equal(t, rep.Record.Stats.Scanned, p.Scanned())
	require.Positive(t, p.Total)

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBackfillCollector(j, testLogger()))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	for _, mf := range mfs {
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	text := buf.String()
	require.Contains(t, text, `migctl_backfill_progress_ratio{direction="forward"} 1`)
	require.Contains(t, text, `migctl_backfill_state{direction="forward",state="done"} 1`)
	require.Contains(t, text, `migctl_backfill_state{direction="forward",state="running"} 0`)
	require.Contains(t, text, fmt.Sprintf(`migctl_backfill_scanned_sessions_total{direction="forward",node=%q} %d`, m0(rep), rep.Record.Stats.Scanned))
	// Every backfill series the dashboard reads is one the collector exports.
	dash, err := os.ReadFile("../deploy/grafana/migctl-dashboard.json")
	require.NoError(t, err)
	used := regexp.MustCompile(`migctl_backfill_[a-z_]+`).FindAllString(string(dash), -1)
	require.NotEmpty(t, used, "the dashboard has backfill panels")
	for _, m := range used {
		require.Contains(t, text, "\n"+m+"{", "the dashboard reads %s, the collector does not export it", m)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool check metrics:\n%s\n%s", out, text)
	}
}

// m0 is the one node of a single-node backfill.
func m0(rep *BackfillReport) string {
	for n := range rep.PerNode {
		return n
	}
	return ""
}
