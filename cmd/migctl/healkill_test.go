package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/testkit"
)

// TestHealKilledAtEachStepUnderTraffic: a real `migctl cluster heal
// --execute` SIGKILLed after each of its steps in turn (one split per
// step), with load generators running on every node throughout, and then
// `--resume`d by a new migctl: every resume heals (exit 0, replicas
// identical), and at the end no acknowledged operation of any client is
// lost, wrong or resurrected. The first round carries out a plan file
// written by --plan -o json; a plan file whose islands no longer exist is
// refused (exit 5); a step --stop-after does not know is a usage error.
func TestHealKilledAtEachStepUnderTraffic(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	time.Sleep(500 * time.Millisecond) // the recorders cover the time before the first split
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 2000, 7)
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const lg = "lgk"
	for i := range cl.Nodes {
		r := cl.Eval(i, `case erlmcp_loadgen:start(#{name => N, rate => 200, keyspace => 300}) of {ok, _} -> ok; E -> E end`,
			map[string]erl.Term{"N": erl.Atom(lg)})
		require.Equal(t, erl.Atom("ok"), r)
	}
	running := true
	stopLoad := func() {
		for i := range cl.Nodes {
			cl.Eval(i, `erlmcp_loadgen:stop(N), ok`, map[string]erl.Term{"N": erl.Atom(lg)})
		}
		running = false
	}
	t.Cleanup(func() {
		if running {
			stopLoad()
		}
	})

	r := run(t, env, "cluster", "heal", "--execute", "--yes", "--stop-after", "mergee")
	require.Equal(t, cliutil.ExitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "not a step of the heal")

	heals := func() []cluster.HealRecord {
		t.Helper()
		r := run(t, env, "cluster", "restore-backup", "--list", "-o", "json")
		if r.code == cliutil.ExitUsage && strings.Contains(r.stderr, "no journal at") {
			return nil // before the first heal: --list creates no journal
		}
		require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
		var hs []cluster.HealRecord
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &hs))
		return hs
	}
	steps := cluster.HealSteps()
	planFile := filepath.Join(t.TempDir(), "plan.json")
	for _, step := range steps[:len(steps)-1] { // after the last one the heal is complete
		time.Sleep(time.Second)
		cl.Partition([]int{0, 1}, []int{2})
		time.Sleep(1500 * time.Millisecond) // both sides take writes and deletes
		cl.ConnectAll(ctx)
		args := []string{"cluster", "heal", "--execute", "--yes", "--reason", "killed after " + step}
		if step == steps[0] {
			r := run(t, env, "cluster", "heal", "--plan", "-o", "json")
			require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
			require.NoError(t, os.WriteFile(planFile, []byte(r.stdout), 0o600))
			args = append(args, "--plan-file", planFile)
		}
		before := len(heals())
		killAt(t, env, "heal:after:"+step, args...)
		hs := heals()
		require.Len(t, hs, before+1, "the killed heal is in the journal")
		var h cluster.HealRecord
		for _, x := range hs {
			if !x.Completed {
				h = x
			}
		}
		require.NotEmpty(t, h.ID, "an unfinished heal after killing at %s: %+v", step, hs)
		require.Equal(t, step, h.Done[len(h.Done)-1], "killed right after %s", step)

		// --dry-run lists what the resume would do and does nothing.
		r = run(t, env, "cluster", "heal", "--resume", h.ID, "--dry-run", "-o", "json")
		require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
		var dry cluster.HealReport
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &dry))
		require.True(t, dry.DryRun)
		require.NotEmpty(t, dry.Steps)
		if !slices.Contains(h.Done, "reload-losers") {
			require.Equal(t, "check", dry.Steps[0].Step, "a resume before the reload checks the islands again")
		}

		r = run(t, env, "cluster", "heal", "--resume", h.ID, "--yes", "-o", "json")
		require.Equal(t, cliutil.ExitOK, r.code, "resume after %s: %s\n%s", step, r.stdout, r.stderr)
		var rep cluster.HealReport
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
		require.True(t, rep.Healed, "resume after %s", step)
		t.Logf("killed after %-13s resumed: %d steps run, healed in %v", step, len(rep.Steps), rep.Duration.Round(time.Millisecond))
		r = run(t, env, "cluster", "verify-replication")
		require.Equal(t, cliutil.ExitOK, r.code, "after %s: %s", step, r.stdout)
	}

	// The first round's plan was for islands that are gone: refused.
	r = run(t, env, "cluster", "heal", "--execute", "--yes", "--plan-file", planFile)
	require.Equal(t, cliutil.ExitRefused, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stderr, "plan no longer matches")

	time.Sleep(500 * time.Millisecond)
	stopLoad()
	for i := range cl.Nodes {
		v := cl.Eval(i, `V = erlmcp_loadgen:verify(N, {mnesia, erlmcp_session}),
		    {maps:get(checked, V), maps:get(lost, V), maps:get(wrong_value, V), maps:get(resurrected, V)}`,
			map[string]erl.Term{"N": erl.Atom(lg)}).(erl.Tuple)
		t.Logf("%s: checked %v lost %v wrong %v resurrected %v", cl.Nodes[i].Name, v[0], v[1], v[2], v[3])
		require.Equal(t, erl.Tuple{0, 0, 0}, erl.Tuple{v[1], v[2], v[3]}, "%s: lost, wrong, resurrected", cl.Nodes[i].Name)
	}
}
