package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// TestPhaseSetRefusedWhilePartitioned: during a Mnesia split a phase change
// would commit on one island only (the phase row is a replicated table) and
// the heal would drop it again. phase set and phase rollback refuse with
// the partitioned exit code and change nothing, --force included.
func TestPhaseSetRefusedWhilePartitioned(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_dets}", "{secondary_backend, erlmcp_session_mnesia}",
			"{migration_phase, phase1}", "{session_cleanup_interval, infinity}"}})
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	show := func() migrate.ClusterStatus {
		res := run(t, env, "phase", "show", "-o", "json")
		var st migrate.ClusterStatus
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), res.stderr)
		return st
	}
	before := show()
	require.Equal(t, migrate.Phase1, before.Phase)
	cl.Partition([]int{0}, []int{1})

	for _, args := range [][]string{
		{"phase", "set", "phase0", "--yes"},
		{"phase", "set", "phase0", "--yes", "--force"},
		{"phase", "set", "phase0", "--dry-run"},
		{"phase", "rollback", "--yes"},
	} {
		res := run(t, env, args...)
		require.Equal(t, cliutil.ExitPartitioned, res.code, "%v: %s%s", args, res.stdout, res.stderr)
		require.Contains(t, res.stderr, "partitioned", args)
		require.Contains(t, res.stderr, "cluster heal", args)
		require.NotContains(t, res.stdout, "committed", args)
	}
	for _, n := range show().Nodes {
		require.Equal(t, migrate.Phase1, n.Phase, n.Node)
		require.Equal(t, before.Epoch, n.Epoch, "%s: the phase row changed", n.Node)
	}
}
