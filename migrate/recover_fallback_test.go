package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/testkit"
)

// TestRecoverFallbackOnlyChange: a change that turns phase2's fallback on
// (phase2/100 % without it -> phase2/100 % with it) has the same phase and
// percentage on both sides. migctl killed before it switched anything: the
// recovery must see that no node switched (aborted), not that every node
// is "at the target" (recorded committed while the fallback stayed off).
func TestRecoverFallbackOnlyChange(t *testing.T) {
	for _, c := range []struct {
		name   string
		mnesia bool
		env    []string
	}{
		{"file", false, hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase2")},
		{"mnesia", true, hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase2")},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: c.mnesia, Backend: "erlmcp_session_backend_hybrid", AppEnv: c.env})
			ctx := tctx(t, 60*time.Second)
			j := newJournal(t)
			m := newMigrator(t, cl, j)
			// phase2 at 100 % without the fallback, as a rollback from
			// phase3 leaves it.
			st := m.status(ctx)
			require.Equal(t, Phase2, st.Phase)
			_, err := m.setOn(ctx, cl.Nodes[0].Name, Phase2, 100, st.Epoch, false)
			require.NoError(t, err)
			require.False(t, m.status(ctx).Fallback)

			// The change to turn it back on, killed once journaled.
			m.hook = func(step string) error {
				if step == "commit:planned" {
					return errKilled
				}
				return nil
			}
			_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
			require.ErrorIs(t, err, errKilled)
			seq, ok := m.pendingSeq()
			require.True(t, ok, "the killed change is pending")

			m = newMigrator(t, cl, j)
			rec, err := m.Recover(ctx)
			require.NoError(t, err)
			require.NotNil(t, rec)
			require.Equal(t, seq, rec.Seq)
			require.False(t, m.status(ctx).Fallback, "the fallback stayed off")
			require.Equal(t, "aborted", rec.State, "recorded %s: %s", rec.State, rec.Note)

			// Run again, it commits and the recovery has nothing to do.
			rec, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
			require.NoError(t, err)
			require.Equal(t, "committed", rec.State)
			require.True(t, m.status(ctx).Fallback)
		})
	}
}
