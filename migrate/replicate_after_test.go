package migrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// replicaCluster starts 3 hybrid nodes in phase0, each with perNode DETS
// sessions of its own, and the clients' traffic on every node.
func replicaCluster(t *testing.T, perNode int, seed int) (*testkit.Cluster, *Migrator) {
	t.Helper()
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	m := newMigrator(t, cl, newJournal(t))
	for i := range cl.Nodes {
		r := cl.Call(i, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, perNode, seed+i)
		require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(perNode)}, r)
	}
	startLoad(t, cl, 150, 400)
	t.Cleanup(func() { closeLoad(cl) })
	return cl, m
}

// copiesWatch counts the session table's replicas every 50 ms until
// stopped and keeps the fewest seen.
func copiesWatch(ctx context.Context, m *Migrator, node string) (stop func() int) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	fewest := 1 << 30
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if cs, err := m.api().TableCopies(ctx, node, "erlmcp_session"); err == nil {
				mu.Lock()
				fewest = min(fewest, len(cs))
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() int {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return fewest
	}
}

// requireReplicatedUnion: the traffic stopped, every node holds a local
// replica of the session table, the replicas are identical, every
// session of every node's DETS file is in them with its value, the
// change recorder of every node is subscribed to the table again, and no
// acknowledged client write is lost.
func requireReplicatedUnion(t *testing.T, cl *testkit.Cluster) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	for i, s := range stopLoad(t, cl) {
		t.Logf("load node %d: %s", i, describe(s))
	}
	var hashes []int64
	for i := range cl.Nodes {
		r := evalTerm(t, cl, i, `
			Local = lists:member(node(), mnesia:table_info(erlmcp_session, disc_copies)),
			Rows = dets:select(erlmcp_sessions_dets, [{'_', [], ['$_']}]),
			Bad = [Id || {Id, S} <- Rows, case ets:lookup(erlmcp_session, Id) of
			                                  [{_, _, S, _}] -> false;
			                                  _ -> true
			                              end],
			Subscribed = lists:member(whereis(migctl_recorder), mnesia:table_info(erlmcp_session, subscribers)),
			#{local => Local, rows => length(Rows), bad => length(Bad), size => ets:info(erlmcp_session, size),
			  hash => erlang:phash2(lists:sort(ets:tab2list(erlmcp_session))), subscribed => Subscribed}`, nil)
		t.Logf("node %d: %s", i, describe(r.(erl.Map)))
		mm := r.(erl.Map)
		require.Equal(t, true, mm[erl.Atom("local")], "node %d has no replica of its own", i)
		require.Greater(t, mapInt(r, "rows"), int64(1000))
		require.Zero(t, mapInt(r, "bad"), "node %d: DETS sessions missing or different in its Mnesia replica", i)
		require.Equal(t, true, mm[erl.Atom("subscribed")], "node %d: the change recorder lost its subscription with the replica", i)
		hashes = append(hashes, mapInt(r, "hash"))
	}
	require.Equal(t, hashes[0], hashes[1], "replicas differ")
	require.Equal(t, hashes[0], hashes[2], "replicas differ")
	for i, v := range verifyLoad(t, cl, "{mnesia, erlmcp_session}") {
		t.Logf("verify node %d: %s", i, describe(v))
		require.Zero(t, mapInt(v, "lost"), "node %d lost acknowledged writes", i)
		require.Zero(t, mapInt(v, "wrong"), "node %d", i)
	}
}

// TestBackfillReplicateAfter: with --replicate-after the backfill copies
// into one replica of the session table while the others are removed,
// then adds them back with Mnesia's table copy; the traffic runs on all
// three nodes the whole time. Afterwards every node has its replica back,
// identical to the others, holding every node's DETS sessions; nothing a
// client was told is lost; the phase2 gate passes.
func TestBackfillReplicateAfter(t *testing.T) {
	cl, m := replicaCluster(t, 6000, 410)
	ctx := tctx(t, 4*time.Minute)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)

	dry, err := m.Backfill(ctx, BackfillOptions{ReplicateAfter: true, DryRun: true})
	require.NoError(t, err)
	require.NotNil(t, dry.Replicas)
	require.Len(t, dry.Replicas.Removed, 2)
	cs, err := m.api().TableCopies(ctx, cl.Nodes[0].Name, "erlmcp_session")
	require.NoError(t, err)
	require.Len(t, cs, 3, "the dry run changed the replicas")

	stop := copiesWatch(ctx, m, cl.Nodes[0].Name)
	rep, err := m.Backfill(ctx, BackfillOptions{ReplicateAfter: true, Reason: "test", RatePerSec: 6000})
	fewest := stop()
	require.NoError(t, err)
	t.Logf("backfill %.1fs, replicas: %+v", rep.Record.Seconds, *rep.Replicas)
	require.Equal(t, 1, fewest, "the backfill never ran on one replica")
	require.False(t, rep.Replicas.Pending)
	require.Len(t, rep.Replicas.Added, 2)
	require.GreaterOrEqual(t, rep.Record.Stats.Scanned, int64(18000))
	p, err := m.PendingReplicas()
	require.NoError(t, err)
	require.Nil(t, p)

	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.NoError(t, err, "phase2 refused after the backfill")
	requireReplicatedUnion(t, cl)
}

// TestBackfillReplicateAfterInterrupted: the run stops (a crash, as the
// step hook makes it) right after it removed the first replica. The
// journal says which replicas are gone: phase2 is refused until they are
// back, and the next backfill (without --replicate-after) adds them back
// before it copies. Traffic on throughout.
func TestBackfillReplicateAfterInterrupted(t *testing.T) {
	cl, m := replicaCluster(t, 4000, 430)
	ctx := tctx(t, 4*time.Minute)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)

	crash := errors.New("crash after the first replica was removed")
	m.hook = func(step string) error {
		if step == "replica-removed" {
			return crash
		}
		return nil
	}
	_, err = m.Backfill(ctx, BackfillOptions{ReplicateAfter: true, Reason: "test"})
	require.ErrorIs(t, err, crash)
	m.hook = nil
	cs, err := m.api().TableCopies(ctx, cl.Nodes[0].Name, "erlmcp_session")
	require.NoError(t, err)
	require.Len(t, cs, 2, "the crash came after one replica was removed")
	p, err := m.PendingReplicas()
	require.NoError(t, err)
	require.NotNil(t, p, "the removed replicas are not in the journal")

	// phase2 is refused: a complete backfill is missing, and so are the
	// replicas.
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.ErrorIs(t, err, ErrGate)
	require.Contains(t, fmt.Sprint(err), "session_replicas_back")

	rep, err := m.Backfill(ctx, BackfillOptions{Reason: "test", RatePerSec: 6000})
	require.NoError(t, err)
	require.NotNil(t, rep.Replicas, "the rerun did not add the replicas back")
	cs, err = m.api().TableCopies(ctx, cl.Nodes[0].Name, "erlmcp_session")
	require.NoError(t, err)
	require.Len(t, cs, 3)
	p, err = m.PendingReplicas()
	require.NoError(t, err)
	require.Nil(t, p)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.NoError(t, err)
	requireReplicatedUnion(t, cl)
}

// TestRollbackAddsRemovedReplicasBack: the way back from a backfill with
// --replicate-after that stopped with replicas removed is the rollback to
// phase0, which adds them back.
func TestRollbackAddsRemovedReplicasBack(t *testing.T) {
	cl, m := replicaCluster(t, 2000, 450)
	ctx := tctx(t, 3*time.Minute)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)
	crash := errors.New("crash while copying")
	m.hook = func(step string) error {
		if step == "backfill:batch:"+cl.Nodes[1].Name {
			return crash
		}
		return nil
	}
	// A call budget of 1 ms: each call copies about one batch, so node 2's
	// pass takes several calls and the crash between two of them happens
	// (with the default budget a fast node copied its 450 sessions in one
	// call, and the hook, which runs between calls, never fired).
	_, err = m.Backfill(ctx, BackfillOptions{ReplicateAfter: true, Reason: "test", BatchSize: 100, CallBudget: time.Millisecond})
	require.ErrorIs(t, err, crash)
	m.hook = nil
	cs, err := m.api().TableCopies(ctx, cl.Nodes[0].Name, "erlmcp_session")
	require.NoError(t, err)
	require.Len(t, cs, 1, "the failed run added the replicas back itself: the rollback proves nothing")

	_, rep, err := m.Rollback(ctx, ChangeOptions{Reason: "way back"}, BackfillOptions{})
	require.NoError(t, err)
	require.NotNil(t, rep)
	require.Len(t, rep.Replicas.Added, 2)
	cs, err = m.api().TableCopies(ctx, cl.Nodes[0].Name, "erlmcp_session")
	require.NoError(t, err)
	require.Len(t, cs, 3)
	p, err := m.PendingReplicas()
	require.NoError(t, err)
	require.Nil(t, p)
}
