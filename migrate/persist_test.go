package migrate

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// persistRate is the load generator's rate during the persistence tests
// (the live traffic: at least 300 operations per second).
const persistRate = 400

// persistRestart is a VerifyPersistence restart: the node stops gracefully
// and starts again with its data directory and cookie (testkit keeps
// both), the application with the same configuration, and the load again.
// before runs first, on the node still up.
func persistRestart(t *testing.T, cl *testkit.Cluster, env []string, before func()) func(context.Context) error {
	return func(ctx context.Context) error {
		st := evalTerm(t, cl, 0, `maps:without([last_errors], erlmcp_loadgen:stats(lg))`, nil).(erl.Map)
		t.Logf("load before the restart: %s", describe(st))
		if before != nil {
			before()
		}
		node := cl.Nodes[0]
		if err := node.Restart(ctx); err != nil {
			return err
		}
		if err := node.StartApp(ctx, "erlmcp_session_backend_hybrid", env...); err != nil {
			return err
		}
		startLoad(t, cl, persistRate, 1000)
		// Clients work on the restarted node before migctl looks at it
		// (a restart command returns when it returns; this one returns
		// after a second of traffic).
		time.Sleep(time.Second)
		return nil
	}
}

// watchGone checks that the node runs no persistence watch any more and
// that its file is gone.
func watchGone(t *testing.T, cl *testkit.Cluster) {
	t.Helper()
	r := cl.Eval(0, `{persistent_term:get({erlmcp_session_backend_hybrid, persist_watch}, undefined),
	                  filelib:is_regular(filename:join(Dir, "migctl_touched.dets")),
	                  ets:whereis(migctl_persist_seen)}`,
		map[string]erl.Term{"Dir": cl.Nodes[0].Dir})
	require.Equal(t, erl.Tuple{erl.Atom("undefined"), false, erl.Atom("undefined")}, r, "the watch is off and its file deleted")
}

// TestVerifyPersistenceUnderTraffic: ETS → DETS in phase3 (the runbook's
// step 7), 3,000 sessions, clients at 400 operations per second before,
// during and after the restart. Every session they did not touch must be
// judged and found restored; the whole store's count and checksum, what
// the check compared before, do change.
func TestVerifyPersistenceUnderTraffic(t *testing.T) {
	env := hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase3")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	ctx := tctx(t, 120*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Equal(t, Phase3, st.Phase)
	require.Equal(t, "file", st.Mode)
	const seeded = 3000
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, seeded, 7)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(seeded)}, r)

	startLoad(t, cl, persistRate, 1000)
	defer closeLoad(cl)
	time.Sleep(time.Second)

	rep, err := m.VerifyPersistence(ctx, PersistOptions{Reason: "test", Restart: persistRestart(t, cl, env, nil)})
	require.NoError(t, err, "%+v", rep)
	t.Logf("persistence: %+v %+v", rep, rep.Sessions)
	for _, l := range rep.Lines() {
		t.Log(l)
	}
	require.True(t, rep.Restored)
	require.Equal(t, PersistPerSession, rep.Method)
	s := rep.Sessions
	require.NotNil(t, s)
	require.Zero(t, s.Lost+s.Changed+s.Appeared)
	require.Positive(t, s.Touched, "the clients touched sessions during the verification")
	require.GreaterOrEqual(t, s.Restored, int64(seeded), "every seeded session (no client touches them) was judged")
	require.Equal(t, s.Restored, s.Compared)
	require.NotEqual(t, rep.Before, rep.After, "the store changed under the clients: a whole-store comparison cannot pass")
	require.Empty(t, rep.Note)

	stats := stopLoad(t, cl)
	t.Logf("load after the restart: %s", describe(stats[0]))
	require.Zero(t, mapInt(stats[0], "errors"))
	v := verifyLoad(t, cl, "{dets, erlmcp_sessions_dets}")
	require.Zero(t, mapInt(v[0], "lost")+mapInt(v[0], "wrong_value")+mapInt(v[0], "resurrected"), "%s", describe(v[0]))
	watchGone(t, cl)
}

// TestVerifyPersistenceCatchesLoss: the same traffic, on a DETS → Mnesia
// hybrid in phase1 (Mnesia mode), and a real persistence failure: between
// the snapshot before the restart and the restart, sessions no client uses
// are deleted, altered and added in the DETS file behind the backend's back.
// The check must name exactly those, and still not blame the clients'.
func TestVerifyPersistenceCatchesLoss(t *testing.T) {
	const seeded = 3000
	cl, j, m := dualWriteNode(t, seeded, 11)
	env := hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")
	ctx := tctx(t, 120*time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Equal(t, "mnesia", st.Mode)

	startLoad(t, cl, persistRate, 1000)
	defer closeLoad(cl)
	time.Sleep(time.Second)

	var lost, changed, appeared []string
	tamper := func() {
		// usort: the seeded keys as a set. One CI run failed on an Alt
		// key's lookup (badmatch on []); a key listed twice at the edge
		// of Del and Alt is one way to get there (not confirmed). A
		// seeded session really gone would still fail the test below:
		// it would be among the lost ones the check names.
		r := cl.Eval(0, `T = erlmcp_sessions_dets,
		   Seeded = lists:usort([K || K <- dets:select(T, [{{'$1', '_'}, [], ['$1']}]),
		                             byte_size(K) =:= 32, binary:match(K, <<"lg-">>) =:= nomatch]),
		   {Del, Rest} = lists:split(3, Seeded),
		   Alt = lists:sublist(Rest, 3),
		   [ok = dets:delete(T, K) || K <- Del],
		   [begin [{_, S}] = dets:lookup(T, K), ok = dets:insert(T, {K, S#{<<"tampered">> => true}}) end || K <- Alt],
		   New = [<<"tamper-appeared-1">>, <<"tamper-appeared-2">>],
		   [ok = dets:insert(T, {K, erlmcp_session_store:new_session(#{})}) || K <- New],
		   {Del, Alt, New}`, nil).(erl.Tuple)
		for i, dst := range []*[]string{&lost, &changed, &appeared} {
			for _, id := range r[i].(erl.List) {
				*dst = append(*dst, string(erl.Bytes(id)))
			}
			sort.Strings(*dst)
		}
	}
	rep, err := m.VerifyPersistence(ctx, PersistOptions{Reason: "test", Restart: persistRestart(t, cl, env, tamper)})
	require.ErrorIs(t, err, ErrVerify)
	t.Logf("persistence: %v", err)
	require.False(t, rep.Restored)
	require.Equal(t, PersistPerSession, rep.Method)
	s := rep.Sessions
	require.NotNil(t, s)
	require.Len(t, lost, 3)
	require.Equal(t, lost, s.LostIDs)
	require.Equal(t, changed, s.ChangedIDs)
	require.Equal(t, appeared, s.AppearedIDs)
	require.EqualValues(t, 3, s.Lost)
	require.EqualValues(t, 3, s.Changed)
	require.EqualValues(t, 2, s.Appeared)
	require.Positive(t, s.Touched, "the clients touched sessions during the verification")
	require.GreaterOrEqual(t, s.Restored, int64(seeded-6), "the other seeded sessions are restored")
	for _, id := range append(append(append([]string{}, lost...), changed...), appeared...) {
		require.Contains(t, err.Error(), id, "the error names the sessions")
	}
	e, err := j.Get(rep.Seq)
	require.NoError(t, err)
	require.Equal(t, KindPersistence, e.Kind)

	stats := stopLoad(t, cl)
	t.Logf("load after the restart: %s", describe(stats[0]))
	watchGone(t, cl)
}

// TestVerifyPersistenceWithoutHybrid: a node on plain erlmcp_session_dets
// (after the migration) has no watch: the whole store is compared, and the
// report says that the application must be quiet for it.
func TestVerifyPersistenceWithoutHybrid(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_dets"})
	ctx := tctx(t, 60*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 500, 3)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(500)}, r)
	rep, err := m.VerifyPersistence(ctx, PersistOptions{Reason: "test", Restart: func(ctx context.Context) error {
		if err := cl.Nodes[0].Restart(ctx); err != nil {
			return err
		}
		return cl.Nodes[0].StartApp(ctx, "erlmcp_session_dets")
	}})
	require.NoError(t, err)
	require.True(t, rep.Restored)
	require.Equal(t, PersistWholeStore, rep.Method)
	require.Nil(t, rep.Sessions)
	require.EqualValues(t, 500, rep.Before.Count)
	require.Contains(t, rep.Note, "quiet")
	require.NoFileExists(t, filepath.Join(cl.Nodes[0].Dir, "migctl_touched.dets"))
}

// TestVerifyPersistenceNoRestart: a restart command that returns without
// restarting anything (or before the node went down) is not taken for a
// restart: the store that answers must be one that reopened the watch.
func TestVerifyPersistenceNoRestart(t *testing.T) {
	env := hybridEnv("erlmcp_session_ets", "erlmcp_session_dets", "phase3")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	ctx := tctx(t, 60*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 300, 5)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(300)}, r)
	_, err := m.VerifyPersistence(ctx, PersistOptions{Reason: "test", Wait: 2 * time.Second,
		Restart: func(context.Context) error { return nil }})
	require.ErrorIs(t, err, ErrNodeDown)
	require.Contains(t, err.Error(), "has not restarted")
	watchGone(t, cl)
}
