package consistency

import (
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/stretchr/testify/require"
)

// The gap rule: each way the change record can fail to cover the time
// since the last cycle is named; a covered interval is "".
func TestCoverageGap(t *testing.T) {
	cur := Cursor{Node: "n1", Since: 10_000, Started: 5}
	ok := coverage{running: true, started: 5, since: 9_000, cleared: 0, subscribedNow: true}
	require.Empty(t, ok.gap(cur, cur.Since-1000, "n1"))
	cases := map[string]struct {
		c   coverage
		cur Cursor
		n   string
	}{
		"no previous cycle":  {ok, Cursor{}, "n1"},
		"read on":            {ok, cur, "n2"},
		"no change recorder": {coverage{}, cur, "n1"},
		"not subscribed":     {coverage{running: true, started: 5, since: -1}, cur, "n1"},
		"restarted":          {coverage{running: true, started: 6, since: 9_000, subscribedNow: true}, cur, "n1"},
		"resubscribed":       {coverage{running: true, started: 5, since: 10_001, subscribedNow: true}, cur, "n1"},
		"cleared":            {coverage{running: true, started: 5, since: 9_000, cleared: 9_500, subscribedNow: true}, cur, "n1"},
	}
	for want, c := range cases {
		require.Contains(t, c.c.gap(c.cur, c.cur.Since-1000, c.n), want)
	}
	// The reply's coverage term.
	c := parseCoverage(etf.Tuple{etf.Atom("coverage"), int64(5), etf.Atom("undefined"), int64(0)})
	require.True(t, c.running)
	require.False(t, c.subscribedNow)
	require.False(t, parseCoverage(etf.Atom("no_recorder")).running)
}

func TestIDFramesRoundTrip(t *testing.T) {
	ids := []string{"a", "0123456789ABCDEF0123456789ABCDEF", ""}
	b, err := unzip(zip(encodeIDs16(ids)))
	require.NoError(t, err)
	got, err := parseIDs16(b)
	require.NoError(t, err)
	require.Equal(t, ids, got)
	_, err = parseIDs16([]byte{0, 5, 'x'})
	require.Error(t, err)
}
