package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestNativeBackfillReference: the big run's native reference for the
// backfill (migctl_migrate:native_backfill, bench/scale/run.sh) copies
// every row of the node's DETS file into a scratch table shaped like the
// session table, adds the session table's other replicas to it one by one
// when asked to (as --replicate-after), and leaves nothing behind: the
// scratch table is gone and the session table untouched. A scratch table
// left by an interrupted run is refused, not reused.
func TestNativeBackfillReference(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 120*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	const n = 400
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 5)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	tables := func() (scratch bool, sessions int64) {
		r := evalTerm(t, cl, 0, `{lists:member(migctl_native_ref, mnesia:system_info(tables)), mnesia:table_info(erlmcp_session, size)}`, nil).(erl.Tuple)
		return r[0] == true, erl.Int64(r[1]) // ergo decodes the atoms true and false as Go bools
	}

	for _, later := range []bool{true, false} {
		tup, err := m.c.Agent(ctx, cl.Nodes[0].Name, "migctl_migrate:native_backfill",
			erl.Atom("erlmcp_sessions_dets"), erl.Atom("erlmcp_session"), later, 100)
		require.NoError(t, err, "later=%v", later)
		require.Len(t, tup, 4, "{ok, Rows, CopyMicros, Adds}")
		require.EqualValues(t, n, erl.Int64(tup[1]), "rows copied, later=%v", later)
		adds, _ := tup[3].(erl.List)
		if later {
			require.Len(t, adds, 2, "each other replica of the session table added: %v", tup[3])
		} else {
			require.Empty(t, adds, "replicas from the start: nothing added")
		}
		scratch, sessions := tables()
		require.False(t, scratch, "the scratch table is deleted")
		require.Zero(t, sessions, "the session table is not written")
	}

	require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}, cl.Call(0, "mnesia", "create_table", erl.Atom("migctl_native_ref"), erl.List{}))
	_, err := m.c.Agent(ctx, cl.Nodes[0].Name, "migctl_migrate:native_backfill",
		erl.Atom("erlmcp_sessions_dets"), erl.Atom("erlmcp_session"), true, 100)
	require.ErrorContains(t, err, "migctl_native_ref exists")
	scratch, _ := tables()
	require.True(t, scratch, "a scratch table it did not create is left alone")
}
