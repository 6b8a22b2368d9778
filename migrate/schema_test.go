package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestSchemaAndTables builds a 2-node Mnesia cluster the runbook's way
// (schema, then tables) and refuses to touch it a second time.
func TestSchemaAndTables(t *testing.T) {
	ctx := tctx(t, 60*time.Second)
	cl := testkit.Start(t, testkit.Options{Nodes: 2})
	m := newMigrator(t, cl, newJournal(t))

	rep, err := m.CreateSchema(ctx, SchemaOptions{DryRun: true})
	require.NoError(t, err)
	require.Contains(t, rep.Action, "dry-run")
	for _, n := range rep.Nodes {
		require.False(t, n.HasSchema)
	}
	rep, err = m.CreateSchema(ctx, SchemaOptions{Reason: "test"})
	require.NoError(t, err)
	require.Equal(t, "created", rep.Action)
	_, err = m.CreateSchema(ctx, SchemaOptions{})
	require.ErrorIs(t, err, ErrExists, "an existing schema is not touched")

	rep, err = m.CreateTables(ctx, TablesOptions{Reason: "test"})
	require.NoError(t, err)
	require.Equal(t, []TableState{{"erlmcp_session", "created"}, {"migctl_migration", "created"}}, rep.Tables)
	for i := range cl.Nodes {
		r := cl.Eval(i, `{lists:sort(mnesia:table_info(erlmcp_session, disc_copies)), mnesia:table_info(erlmcp_session, attributes)}`, nil)
		tt := r.(erl.Tuple)
		require.Len(t, tt[0], 2, "disc_copies on both nodes")
		require.Equal(t, erl.List{erl.Atom("session_id"), erl.Atom("session_data"), erl.Atom("last_accessed")}, tt[1])
	}
	rep, err = m.CreateTables(ctx, TablesOptions{})
	require.NoError(t, err)
	require.Equal(t, []TableState{{"erlmcp_session", "exists"}, {"migctl_migration", "exists"}}, rep.Tables)

	// --force recreates the schema (and drops the tables).
	rep, err = m.CreateSchema(ctx, SchemaOptions{Force: true})
	require.NoError(t, err)
	require.Equal(t, "recreated", rep.Action)
	r := cl.Eval(0, `lists:member(erlmcp_session, mnesia:system_info(tables))`, nil)
	require.Equal(t, false, r)
}
