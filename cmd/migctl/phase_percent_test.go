package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// TestPhasePercent: phase2's percentage is said, never assumed. A negative
// --percent used to become 100 %, and phase2 without --percent meant 100 %:
// both read every session from the new store at once. Both are bad input
// now (exit 2) and change nothing; so is a percentage above 100.
func TestPhasePercent(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: []string{"{primary_backend, erlmcp_session_ets}", "{secondary_backend, erlmcp_session_dets}",
			"{migration_phase, phase0}", "{session_cleanup_interval, infinity}"}})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("ets"), erl.Map{}, 200, 3)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), 200}, r)
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	res := run(t, env, "phase", "set", "phase1", "--yes")
	require.Equal(t, 0, res.code, res.stderr)
	res = run(t, env, "backfill", "--from", "ets", "--to", "dets", "--yes", "--no-throttle")
	require.Equal(t, 0, res.code, res.stderr)
	phase := func() (migrate.Phase, int) {
		res := run(t, env, "phase", "show", "-o", "json")
		var st migrate.ClusterStatus
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), res.stderr)
		return st.Phase, st.Percent
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--percent", "-5"}, "--percent -5: must be 0..100"},
		{[]string{"--percent", "-1"}, "--percent -1: must be 0..100"},
		{[]string{"--percent", "101"}, "must be 0..100"},
		{nil, "phase2 needs --percent"},
	} {
		args := append([]string{"phase", "set", "phase2", "--yes"}, c.args...)
		res = run(t, env, args...)
		require.Equal(t, cliutil.ExitUsage, res.code, "%v: %s%s", args, res.stdout, res.stderr)
		require.Contains(t, res.stderr, c.want, args)
		p, _ := phase()
		require.Equal(t, migrate.Phase1, p, "%v changed the phase", args)
	}
	res = run(t, env, "phase", "set", "phase3", "--percent", "-5", "--yes")
	require.Equal(t, cliutil.ExitUsage, res.code, res.stderr)

	res = run(t, env, "phase", "set", "phase2", "--percent", "10", "--yes")
	require.Equal(t, 0, res.code, res.stderr)
	p, pct := phase()
	require.Equal(t, migrate.Phase2, p)
	require.Equal(t, 10, pct)
}
