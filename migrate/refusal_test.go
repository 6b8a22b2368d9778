package migrate

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// TestRefusals: bad input gets a clear error and changes nothing.
func TestRefusals(t *testing.T) {
	ctx := tctx(t, 120*time.Second)
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase0")})
	plain := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_dets"})
	j := newJournal(t)
	m := newMigrator(t, cl, j)

	changes := func(t *testing.T) int {
		es, err := j.List(KindPhaseChange, 0)
		require.NoError(t, err)
		return len(es)
	}
	// unchanged checks the cluster is still at phase0 and the journal got
	// no phase change since n.
	unchanged := func(t *testing.T, n int) {
		t.Helper()
		st, err := m.ShowPhase(ctx)
		require.NoError(t, err)
		require.Equal(t, Phase0, st.Phase)
		require.Equal(t, n, changes(t), "no phase change journaled")
	}

	t.Run("unknown phase", func(t *testing.T) {
		n := changes(t)
		_, err := ParsePhase("phase7")
		require.ErrorIs(t, err, ErrUnknownPhase)
		_, err = m.SetPhase(ctx, Phase(7), ChangeOptions{})
		require.ErrorIs(t, err, ErrUnknownPhase)
		unchanged(t, n)
	})
	t.Run("skipping a phase", func(t *testing.T) {
		n := changes(t)
		rec, err := m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
		require.ErrorIs(t, err, ErrSkipPhase)
		require.Contains(t, err.Error(), "phase0 -> phase2")
		require.NotNil(t, rec)
		unchanged(t, n)
		// Dry-run with --force shows the plan and still changes nothing.
		rec, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10, Force: true, DryRun: true})
		require.NoError(t, err)
		require.Equal(t, "dry-run", rec.State)
		require.True(t, rec.Forced)
		unchanged(t, n)
	})
	t.Run("gate without a backfill", func(t *testing.T) {
		// phase1 is allowed; phase2 needs a backfill; then back to phase0.
		_, err := m.SetPhase(ctx, Phase1, ChangeOptions{})
		require.NoError(t, err)
		_, err = m.SetPhase(ctx, Phase2, ChangeOptions{})
		require.ErrorIs(t, err, ErrGate)
		require.Contains(t, err.Error(), "backfill_complete")
		_, _, err = m.Rollback(ctx, ChangeOptions{}, BackfillOptions{})
		require.NoError(t, err)
		st, err := m.ShowPhase(ctx)
		require.NoError(t, err)
		require.Equal(t, Phase0, st.Phase)
		// A backfill outside phase1/phase2 is refused.
		_, err = m.Backfill(ctx, BackfillOptions{})
		require.ErrorIs(t, err, ErrWrongPhase)
	})
	t.Run("table that is not a session table", func(t *testing.T) {
		r := cl.Eval(0, `mnesia:create_table(not_sessions, [{attributes, [a, b, c]}, {disc_copies, [node()]}])`, nil)
		require.Equal(t, erl.Atom("atomic"), r.(erl.Tuple)[0])
		_, err := m.CreateTables(ctx, TablesOptions{SessionTable: "not_sessions"})
		require.ErrorIs(t, err, ErrNotSessions)
		// The right layout is accepted as it is.
		rep, err := m.CreateTables(ctx, TablesOptions{})
		require.NoError(t, err)
		require.Equal(t, []TableState{{"erlmcp_session", "exists"}, {"migctl_migration", "created"}}, rep.Tables)
	})
	t.Run("existing schema", func(t *testing.T) {
		_, err := m.CreateSchema(ctx, SchemaOptions{})
		require.ErrorIs(t, err, ErrExists)
	})
	t.Run("hybrid not installed", func(t *testing.T) {
		pm := newMigrator(t, plain, newJournal(t))
		_, err := pm.SetPhase(ctx, Phase1, ChangeOptions{})
		require.ErrorIs(t, err, ErrNotInstalled)
		_, err = pm.Backfill(ctx, BackfillOptions{})
		require.ErrorIs(t, err, ErrNotInstalled)
	})
	t.Run("node down", func(t *testing.T) {
		n := changes(t)
		dm, err := New(Config{Client: cl.Client(), Nodes: []string{cl.Nodes[0].Name, "migt_gone@127.0.0.1"},
			Journal: newJournal(t), Logger: testLogger()})
		require.NoError(t, err)
		_, err = dm.SetPhase(ctx, Phase1, ChangeOptions{})
		require.ErrorIs(t, err, ErrNodeDown)
		st := dm.status(ctx)
		require.Equal(t, []string{"migt_gone@127.0.0.1"}, st.Down)
		require.ErrorIs(t, st.Ready(), ErrNodeDown)
		unchanged(t, n)
	})
	t.Run("journal from another cluster", func(t *testing.T) {
		n := changes(t)
		oj, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
		require.NoError(t, err)
		require.NoError(t, oj.Bind("mnesia:some-other-cluster"))
		om := newMigrator(t, cl, oj)
		_, err = om.SetPhase(ctx, Phase1, ChangeOptions{})
		require.ErrorIs(t, err, journal.ErrOtherCluster)
		unchanged(t, n)
	})
	t.Run("mixed cluster", func(t *testing.T) {
		// Two single-node stores in file mode, set apart by hand.
		other := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid",
			AppEnv: hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase1")})
		mm, err := New(Config{Client: cl.Client(), Nodes: []string{cl.Nodes[0].Name, other.Nodes[0].Name},
			Journal: newJournal(t), Logger: testLogger()})
		require.NoError(t, err)
		st, _ := mm.ShowPhase(ctx)
		require.True(t, st.Mixed)
		_, err = mm.SetPhase(ctx, Phase1, ChangeOptions{})
		require.ErrorIs(t, err, ErrMixed)
		// --force brings both to the same phase.
		_, err = mm.SetPhase(ctx, Phase1, ChangeOptions{Force: true})
		require.NoError(t, err)
		st, _ = mm.ShowPhase(ctx)
		require.False(t, st.Mixed)
		// ... and a failure on the second node reverts the first: make the
		// second node's store refuse by stopping its application.
		_, err = cl.Client().Call(ctx, other.Nodes[0].Name, "application", "stop", erl.Atom("erlmcp_fixture"))
		require.NoError(t, err)
		rec := &ChangeRecord{From: Phase1, FromPercent: 100, To: Phase0, ToPercent: 100, Mode: "file"}
		st = mm.status(ctx)
		for i := range st.Nodes {
			st.Nodes[i].Epoch = mm.nodeStatus(ctx, st.Nodes[i].Node).Epoch
		}
		st.Nodes[1].Epoch = st.Nodes[0].Epoch // the stopped one: any epoch
		err = mm.switchNodes(ctx, rec, st)
		require.Error(t, err)
		require.Equal(t, "reverted", rec.State)
		require.Equal(t, []string{cl.Nodes[0].Name}, rec.Reverted)
		require.Equal(t, Phase1, mm.nodeStatus(ctx, cl.Nodes[0].Name).Phase)
		// Put it back for the other subtests.
		_, err = m.SetPhase(ctx, Phase0, ChangeOptions{Force: true})
		require.NoError(t, err)
	})
	_ = context.Background
	_ = erl.Term(nil)
}
