package consistency_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
)

// TestRecheckTellsWritesInFlightFromAStaleCopy: two sessions differ on
// every read. One is rewritten continually, the source first and the
// target one write behind (each 100 ms the source gets the next version
// and the target the one before), as a dual-write on a slow node is (the
// 1.4M big run reported such a hot session as mismatched): its older copy
// changes between reads, so it is counted as unsettled, not as a
// difference. (The copies are never equal, and the target moves three
// times between two reads 300 ms apart: no timing window.) The
// other's source keeps changing while its target stays as it was, a copy
// that stopped receiving writes: that is a difference, however hot the
// key.
func TestRecheckTellsWritesInFlightFromAStaleCopy(t *testing.T) {
	p := newPair(t, 1, 2000)
	hot, stale := p.ids[100], p.ids[200]
	// Both writers stop by themselves after 40 s (and with the node).
	r := p.cl.Eval(0, `
		Bump = fun(S, K) -> M = maps:get(metadata, S),
		                    S#{last_accessed => erlang:system_time(millisecond),
		                       metadata => M#{<<"seq">> => K}} end,
		Deadline = erlang:monotonic_time(millisecond) + 40000,
		Loop = fun L(Id, K, Prev, TargetToo) ->
		           case erlang:monotonic_time(millisecond) < Deadline of
		               false -> ok;
		               true ->
		                   [{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
		                   S1 = Bump(S, K),
		                   ok = dets:insert(erlmcp_sessions_dets, {Id, S1}),
		                   timer:sleep(100),
		                   TargetToo andalso Prev =/= none andalso
		                       mnesia:dirty_write({erlmcp_session, Id, Prev, maps:get(last_accessed, Prev)}),
		                   L(Id, K + 1, S1, TargetToo)
		           end
		       end,
		spawn(fun() -> Loop(Hot, 1, none, true) end),
		spawn(fun() -> Loop(Stale, 1, none, false) end),
		ok`, map[string]erl.Term{"Hot": []byte(hot), "Stale": []byte(stale)})
	require.Equal(t, erl.Atom("ok"), r)
	time.Sleep(time.Second)

	rep, err := consistency.Check(tctx(t), p.src, p.tgt, p.opts())
	require.NoError(t, err)
	t.Logf("report: mismatched %d unsettled %d rechecked %d samples %+v", rep.Mismatched, rep.Unsettled, rep.Rechecked, rep.Samples)
	require.EqualValues(t, 1, rep.Mismatched, "the stale copy must be reported")
	require.Equal(t, stale, rep.Samples[consistency.KindMismatched][0].ID)
	require.EqualValues(t, 1, rep.Unsettled, "the session written in flight is not a difference")
	require.Equal(t, hot, rep.Samples[consistency.KindUnsettled][0].ID)
	require.EqualValues(t, rep.Processed-2, rep.Matching)
}

// TestRecheckCountsAnExpiryBetweenReads: a difference whose session
// expires between the first read and the recheck is counted as expired,
// not as a difference (and is not mistaken for another one's copy).
func TestRecheckCountsAnExpiryBetweenReads(t *testing.T) {
	p := newPair(t, 1, 500)
	p.eval(t, p.ids[7], corruptTarget)
	// The clock jumps a year ahead after the suspects' first reading: every
	// session has expired at the recheck.
	var compared, reads atomic.Int32
	o := p.opts()
	o.Log = slog.New(onMessage{"listed rows compared", &compared})
	o.Now = func() time.Time {
		if compared.Load() > 0 && reads.Add(1) > 1 {
			return time.Now().Add(365 * 24 * time.Hour)
		}
		return time.Now()
	}
	rep, err := consistency.Check(tctx(t), p.src, p.tgt, o)
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.Rechecked)
	require.EqualValues(t, 1, rep.Expired)
	require.Zero(t, rep.Mismatched)
	require.Zero(t, rep.Unsettled)
	require.True(t, rep.Clean(), "%+v", rep)
}

// onMessage counts the records whose message is msg.
type onMessage struct {
	msg string
	n   *atomic.Int32
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onMessage) WithGroup(string) slog.Handler      { return h }

// TestIncrementalCarriesWritesStillInFlight: a monitor's incremental
// cycle does not report a session the application is still writing at
// every recheck, and does not drop it either: it is carried to the next
// cycle, as every write in flight is, and verified once it has settled.
func TestIncrementalCarriesWritesStillInFlight(t *testing.T) {
	p := dualWrite(t, 2000)
	ctx := tctx(t)
	opts := consistency.Options{Client: p.cl.Client(), RecheckDelay: 300 * time.Millisecond}
	cur, err := consistency.MarkCursor(ctx, p.src, p.tgt, opts)
	require.NoError(t, err)
	hot := p.ids[100]
	// Every 100 ms the next version to DETS and the one before to Mnesia
	// (never equal, Mnesia moving between any two reads), for 30 s.
	require.Equal(t, erl.Atom("ok"), p.cl.Eval(0, `
		Deadline = erlang:monotonic_time(millisecond) + 30000,
		Loop = fun L(K, Prev) ->
		           case erlang:monotonic_time(millisecond) < Deadline of
		               false -> ok;
		               true ->
		                   [{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
		                   M = maps:get(metadata, S),
		                   S1 = S#{last_accessed => erlang:system_time(millisecond), metadata => M#{<<"seq">> => K}},
		                   ok = dets:insert(erlmcp_sessions_dets, {Id, S1}),
		                   timer:sleep(100),
		                   Prev =:= none orelse
		                       mnesia:dirty_write({erlmcp_session, Id, Prev, maps:get(last_accessed, Prev)}),
		                   L(K + 1, S1)
		           end
		       end,
		spawn(fun() -> Loop(1, none) end), ok`, map[string]erl.Term{"Id": []byte(hot)}))
	time.Sleep(time.Second)
	res, err := consistency.Incremental(ctx, p.src, p.tgt, cur, opts, consistency.IncrementalOptions{Overlap: time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, res.Gap)
	t.Logf("cycle: changed %d carried %d pending %v report %+v", res.Changed, res.Carried, res.Next.Pending, res.Report.Samples)
	require.True(t, res.Report.Clean(), "%v", res.Report.Samples)
	require.Contains(t, res.Next.Pending, hot, "carried to the next cycle")
	require.GreaterOrEqual(t, res.Carried, 1)
}
