package consistency_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
	"github.com/erlmcp/migctl/testkit"
)

// The monitor exports each node's phase and the hybrid backend's counters
// (read errors, fallbacks, ...) read from a real node running the hybrid.
func TestMonitorExportsHybridState(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid", AppEnv: []string{
		"{primary_backend, erlmcp_session_ets}", "{secondary_backend, erlmcp_session_dets}",
		"{migration_phase, phase1}", "{session_cleanup_interval, infinity}"}})
	// Some traffic through the hybrid, so its counters move.
	cl.Eval(0, `[begin S = erlmcp_session_store:new_session(#{}), erlmcp_session_store:fetch(maps:get(id, S)) end || _ <- lists:seq(1, 20)], ok`, nil)
	c := cl.Client()
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
	require.NoError(t, err)
	mg, err := migrate.New(migrate.Config{Client: c, Nodes: cl.Names(), Journal: j})
	require.NoError(t, err)
	src, _ := backends.Open(c, cl.Nodes[0].Name, backends.DefaultSpec(backends.KindETS))
	tgt, _ := backends.Open(c, cl.Nodes[0].Name, backends.DefaultSpec(backends.KindDETS))
	mon, err := consistency.NewMonitor(consistency.MonitorConfig{Source: src, Target: tgt, Journal: j,
		Check: consistency.Options{Client: c, Sample: 10},
		Phases: func(ctx context.Context) (map[string]consistency.NodeMigration, error) {
			st, err := mg.ShowPhase(ctx)
			if err != nil {
				return nil, err
			}
			out := map[string]consistency.NodeMigration{}
			for _, n := range st.Nodes {
				out[n.Node] = consistency.NodeMigration{Phase: n.Phase.String(), Counters: n.Counters}
			}
			return out, nil
		}})
	require.NoError(t, err)
	require.NoError(t, mon.Open(tctx(t)))
	defer mon.Close(context.Background())
	_, err = mon.CheckNow(tctx(t))
	require.NoError(t, err)
	out, err := testutil.CollectAndFormat(mon.Registry(), expfmt.TypeTextPlain, "migctl_node_migration_phase", "migctl_hybrid_events")
	require.NoError(t, err)
	text := string(out)
	require.Contains(t, text, `migctl_node_migration_phase{node="`+cl.Nodes[0].Name+`",phase="phase1"} 1`)
	require.True(t, strings.Contains(text, `migctl_hybrid_events{event="`), text)
	_ = erl.Atom("")
}
