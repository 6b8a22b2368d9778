package consistency

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl/agentapi"
)

// The gap rule: each way the change record can fail to cover the time
// since the last cycle is named; a covered interval is "".
func TestCoverageGap(t *testing.T) {
	cur := Cursor{Node: "n1", Since: 10_000, Started: 5}
	ok := agentapi.Coverage{Running: true, Started: 5, Since: 9_000, Cleared: 0, Subscribed: true}
	require.Empty(t, coverageGap(ok, cur, cur.Since-1000, "n1"))
	cases := map[string]struct {
		c   agentapi.Coverage
		cur Cursor
		n   string
	}{
		"no previous cycle":  {ok, Cursor{}, "n1"},
		"read on":            {ok, cur, "n2"},
		"no change recorder": {agentapi.Coverage{}, cur, "n1"},
		"not subscribed":     {agentapi.Coverage{Running: true, Started: 5, Since: -1}, cur, "n1"},
		"restarted":          {agentapi.Coverage{Running: true, Started: 6, Since: 9_000, Subscribed: true}, cur, "n1"},
		"resubscribed":       {agentapi.Coverage{Running: true, Started: 5, Since: 10_001, Subscribed: true}, cur, "n1"},
		"cleared":            {agentapi.Coverage{Running: true, Started: 5, Since: 9_000, Cleared: 9_500, Subscribed: true}, cur, "n1"},
	}
	for want, c := range cases {
		require.Contains(t, coverageGap(c.c, c.cur, c.cur.Since-1000, c.n), want)
	}
}
