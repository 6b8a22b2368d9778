package consistency_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestExpiryByTheNodesClock: the node's clock is 10 minutes behind
// migctl's (a host clock stepped after the node booted, or migctl on
// another host). A session the target lost, 5 minutes from expiring by
// the node's clock, is a difference; judged by migctl's clock it had
// expired, and the loss was hidden as an expiry. A session expired by the
// node's clock is an expiry.
func TestExpiryByTheNodesClock(t *testing.T) {
	p := newPairWith(t, testkit.Options{Nodes: 1, ClockOffset: -10 * time.Minute}, 300)
	// Two source-only copies of a seeded session, with a 30 min timeout:
	// one accessed 25 min ago by the node's clock, one 31 min ago.
	for id, ago := range map[string]time.Duration{"clock-live": 25 * time.Minute, "clock-expired": 31 * time.Minute} {
		r := p.cl.Eval(0, `[{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
			LA = erlang:system_time(millisecond) - Ago,
			dets:insert(erlmcp_sessions_dets, {New, S#{id => New, last_accessed => LA, timeout_ms => 1800000}})`,
			map[string]erl.Term{"Id": []byte(p.ids[0]), "New": []byte(id), "Ago": ago.Milliseconds()})
		require.Equal(t, erl.Atom("ok"), r)
	}
	rep, err := consistency.Check(tctx(t), p.src, p.tgt, p.opts())
	require.NoError(t, err)
	var missing []string
	for _, d := range rep.Samples[consistency.KindMissingInTarget] {
		missing = append(missing, d.ID)
	}
	require.Equal(t, []string{"clock-live"}, missing, "%+v", rep)
	require.EqualValues(t, 1, rep.Expired)
}
