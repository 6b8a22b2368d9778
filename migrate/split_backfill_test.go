package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// TestSplitDuringBackfill: a Mnesia split brain in the middle of the DETS →
// Mnesia backfill, healed while clients keep working on every node (the
// test never pauses them). The heal decides from the change recorders'
// evidence; the backfilled rows carry their write time, so rows the
// winners backfilled during the split are new writes of the winners, not
// "deleted on the loser" (before the write-time fix and the recorders,
// this heal deleted ~23k backfilled sessions). Then the backfill completes
// (resumed from its checkpoints when the heal's reload of the loser made it
// fail, as an operator would), and:
//   - the union of every node's DETS file equals the Mnesia table (every
//     session, seeded or the clients', in both, with the same value);
//   - every acknowledged operation of every node's clients is in Mnesia
//     and in the node's DETS file: 0 lost, 0 wrong, 0 resurrected;
//   - the phase2 gate holds.
func TestSplitDuringBackfill(t *testing.T) {
	const (
		perNode  = 8000 // seeded DETS sessions per node
		rate     = 250  // client operations per second per node
		keyspace = 300
	)
	t0 := time.Now()
	tk := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 170*time.Second)
	j := newJournal(t)
	m := newMigrator(t, tk, j)

	// Sessions that lived in each node's DETS file before the migration
	// (a different seed per node: distinct ids).
	for i := range tk.Nodes {
		r := tk.Call(i, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, perNode, 100+i)
		require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(perNode)}, r)
	}
	seeded := int64(0)
	for i := range tk.Nodes {
		seeded += erl.Int64(tk.Call(i, "dets", "info", erl.Atom("erlmcp_sessions_dets"), erl.Atom("size")))
	}
	require.EqualValues(t, 3*perNode, seeded)

	for i := range tk.Nodes {
		r := evalTerm(t, tk, i, `element(1, erlmcp_loadgen:start(#{rate => R, keyspace => K, name => lg}))`,
			map[string]erl.Term{"R": rate, "K": keyspace})
		require.Equal(t, erl.Atom("ok"), r)
	}
	loadOn := true
	t.Cleanup(func() {
		if loadOn {
			for i := range tk.Nodes {
				c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _ = tk.Client().Call(c, tk.Nodes[i].Name, "erlmcp_loadgen", "stop", erl.Atom("lg"))
				cancel()
			}
		}
		closeLoad(tk)
	})
	time.Sleep(500 * time.Millisecond) // the recorders cover the time before the split

	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "split during backfill test"})
	require.NoError(t, err)

	// The backfill, paced so that it is still running through the split
	// and the heal; the load limits are out of the way (the machine is
	// shared: the throttle would only make the timing less predictable).
	bfOpts := BackfillOptions{BatchSize: 200, RatePerSec: 2000, Reason: "split during backfill test",
		Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000}}
	type result struct {
		rep *BackfillReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := m.Backfill(ctx, bfOpts)
		done <- result{rep, err}
	}()

	// Split once a good part of the sessions is in Mnesia.
	mnesiaSize := func(i int) int64 {
		return erl.Int64(tk.Call(i, "mnesia", "table_info", erl.Atom("erlmcp_session"), erl.Atom("size")))
	}
	deadline := time.Now().Add(30 * time.Second)
	for mnesiaSize(0) < seeded/5 {
		require.True(t, time.Now().Before(deadline), "the backfill does not progress")
		select {
		case r := <-done:
			t.Fatalf("the backfill ended before the split: %v %+v", r.err, r.rep)
		case <-time.After(100 * time.Millisecond):
		}
	}
	atSplit := mnesiaSize(0)
	tk.Partition([]int{0, 1}, []int{2})
	time.Sleep(2 * time.Second) // both sides take the clients' writes and deletes, and backfill
	tk.ConnectAll(ctx)
	select {
	case r := <-done:
		t.Fatalf("the backfill ended before the heal: %v %+v", r.err, r.rep)
	default:
	}

	cl, err := cluster.New(tk.Client(), cluster.Options{Nodes: tk.Names(), Buckets: 512})
	require.NoError(t, err)
	plan, err := cl.Plan(ctx, cluster.PlanOptions{})
	require.NoError(t, err)
	require.Len(t, plan.Islands, 2)
	isClient := func(id string) bool { return strings.HasPrefix(id, "lg-") }
	var decisions int
	for _, tp := range plan.Tables {
		for _, lp := range tp.Losers {
			require.True(t, lp.EvidenceComplete, "%s: %s", tp.Table, lp.Evidence)
			w, d, x := lp.Counts()
			decisions += len(lp.Decisions)
			t.Logf("plan %s: split at %d (%s); loser wrote %d, deleted %d; winner wrote %d, deleted %d; kept near split %d; decisions: write %d delete %d drop %d",
				tp.Table, lp.SplitAt, lp.SplitAtSource, len(lp.WrittenOnLoser), len(lp.DeletedOnLoser),
				len(lp.WrittenOnWinner), len(lp.DeletedOnWinner), len(lp.KeptNearSplit), w, d, x)
			if tp.Table != "erlmcp_session" {
				continue
			}
			// Only clients delete sessions: a deletion of anything else
			// is the heal taking a backfilled row for a deletion.
			var bad []string
			for _, c := range lp.DeletedOnLoser {
				if !isClient(c.ID) {
					bad = append(bad, c.ID)
				}
			}
			for _, c := range lp.DeletedOnWinner {
				if !isClient(c.ID) {
					bad = append(bad, c.ID)
				}
			}
			for _, dc := range lp.Decisions {
				if dc.Action == cluster.ActDelete && !isClient(dc.ID) {
					bad = append(bad, dc.ID+" ("+dc.Why+")")
				}
			}
			require.Empty(t, bad, "backfilled sessions taken for deletions (%d)", len(bad))
			require.NotEmpty(t, lp.WrittenOnLoser, "the loser wrote during the split")
			require.NotEmpty(t, lp.WrittenOnWinner, "the winners wrote during the split")
		}
	}
	hj, err := journal.Open(filepath.Join(t.TempDir(), "heal.db"), journal.Options{})
	require.NoError(t, err)
	hrep, err := cl.Execute(ctx, plan, cluster.ExecuteOptions{Journal: hj, BackupDir: t.TempDir(), Reason: "split during backfill"})
	for _, s := range hrep.Steps {
		t.Logf("  %-14s %8v %s %s", s.Step, s.Duration.Round(time.Millisecond), s.Detail, s.Error)
	}
	require.NoError(t, err)
	require.True(t, hrep.Healed)
	require.Equal(t, cluster.Healthy, hrep.Final.Verdict)
	for _, mr := range hrep.Merged {
		t.Logf("merged %s: written %d skipped %d deleted %d kept %d", mr.Table, mr.Written, mr.Skipped, mr.Deleted, mr.Kept)
	}
	if len(hrep.Repaired) > 0 {
		t.Logf("replicas repaired: %v", hrep.Repaired)
	}
	t.Logf("healed in %v (fence %v); Mnesia held %d rows at the split, %d of %d sessions seeded",
		hrep.Duration.Round(time.Millisecond), hrep.LongestFence.Round(time.Millisecond), atSplit, seeded, seeded)

	// The backfill: it completes, or the heal's reload of the loser made
	// it fail and it is resumed from its checkpoints.
	r := <-done
	backfills := 1
	if r.err != nil {
		t.Logf("backfill failed through the heal (%v); resuming it", r.err)
		require.NotNil(t, r.rep)
		t.Logf("  stats so far %+v", r.rep.Record.Stats)
		r.rep, r.err = m.Backfill(ctx, bfOpts)
		backfills++
		require.NoError(t, r.err)
		require.True(t, r.rep.Record.Resumed)
	}
	require.True(t, r.rep.Record.Complete)
	t.Logf("backfill complete (run %d): %+v, resumed at %d", backfills, r.rep.Record.Stats, r.rep.Record.ResumedAt)

	// The phase2 gate. It refuses after a secondary write failure since
	// the backfill started (the loser's writes while its Mnesia restarted):
	// the operator then runs the backfill again, as the gate says.
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10, Reason: "split during backfill test"})
	if errors.Is(err, ErrGate) {
		t.Logf("phase2 gate: %v; backfilling again", err)
		rep, berr := m.Backfill(ctx, bfOpts)
		backfills++
		require.NoError(t, berr)
		require.True(t, rep.Record.Complete)
		t.Logf("backfill (run %d): %+v", backfills, rep.Record.Stats)
		_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10, Reason: "split during backfill test"})
	}
	require.NoError(t, err, "phase2 gate")
	time.Sleep(500 * time.Millisecond) // traffic in phase2

	stats := stopLoad(t, tk)
	loadOn = false

	// Every session of every node's DETS file is in Mnesia, and Mnesia
	// holds nothing else.
	var members []backends.Store
	for _, n := range tk.Names() {
		s, err := backends.Open(tk.Client(), n, backends.DefaultSpec(backends.KindDETS))
		require.NoError(t, err)
		members = append(members, s)
	}
	union, err := backends.NewUnion(members...)
	require.NoError(t, err)
	var total int64
	for i := range tk.Nodes {
		sz := mnesiaSize(i)
		if i == 0 {
			total = sz
		}
		require.Equal(t, total, sz, "replica sizes")
	}
	for i, n := range tk.Names() {
		tgt, err := backends.Open(tk.Client(), n, backends.DefaultSpec(backends.KindMnesia))
		require.NoError(t, err)
		crep, err := consistency.Check(ctx, union, tgt, consistency.Options{Client: tk.Client()})
		require.NoError(t, err)
		t.Logf("DETS union vs Mnesia on %s: processed %d matching %d mismatched %d missing %d extra %d expired %d",
			tk.Nodes[i].Name, crep.Processed, crep.Matching, crep.Mismatched, crep.MissingInTarget, crep.ExtraInTarget, crep.Expired)
		require.True(t, crep.Clean(), "DETS union vs Mnesia on %s: %v", tk.Nodes[i].Name, fmt.Sprint(crep.Samples))
		require.GreaterOrEqual(t, crep.Processed, seeded)
	}

	var ops, errs int64
	for _, spec := range []string{"{mnesia, erlmcp_session}", "{dets, erlmcp_sessions_dets}"} {
		v := verifyLoad(t, tk, spec)
		for i := range tk.Nodes {
			t.Logf("%s %s: %s", tk.Nodes[i].Name, spec, describe(v[i]))
			require.Greater(t, mapInt(v[i], "checked"), int64(100), "%s %s", tk.Nodes[i].Name, spec)
			require.Equal(t, [3]int64{0, 0, 0}, [3]int64{mapInt(v[i], "lost"), mapInt(v[i], "wrong_value"), mapInt(v[i], "resurrected")},
				"%s %s: lost, wrong, resurrected", tk.Nodes[i].Name, spec)
		}
	}
	for i := range tk.Nodes {
		t.Logf("%s load: %s", tk.Nodes[i].Name, describe(stats[i]))
		ops += mapInt(stats[i], "ops")
		errs += mapInt(stats[i], "errors")
	}
	t.Logf("SPLIT-DURING-BACKFILL: %d sessions seeded, %d in Mnesia at the split, %d at the end; %d heal decisions; %d backfill run(s); %d client ops, %d errors; %v",
		seeded, atSplit, total, decisions, backfills, ops, errs, time.Since(t0).Round(time.Millisecond))
}
