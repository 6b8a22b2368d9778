package agentapi

import (
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/stretchr/testify/require"
)

// The frames migctl_incr reads and writes: ids as <<Len:16, Id>>* (zlib),
// rows as <<Len:16, Id, Digest:32, LA:64/signed>>*; a truncated frame is
// an error, not a short list.
func TestIncrFrames(t *testing.T) {
	ids := []string{"a", "0123456789ABCDEF0123456789ABCDEF", ""}
	b, err := unzip(zip(encodeIDs16(ids)))
	require.NoError(t, err)
	got, err := parseIDs16(b)
	require.NoError(t, err)
	require.Equal(t, ids, got)
	_, err = parseIDs16([]byte{0, 5, 'x'})
	require.Error(t, err)

	row := append(encodeIDs16([]string{"id1"}), 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe)
	m, err := parsePresent(row)
	require.NoError(t, err)
	require.Equal(t, map[string]Digest{"id1": {Digest: 7, LastAccessed: -2}}, m)
	_, err = parsePresent(row[:len(row)-1])
	require.Error(t, err)
}

// The recorder's coverage term: subscribed or not, or no recorder.
func TestIncrCoverage(t *testing.T) {
	c := parseCoverage(etf.Tuple{etf.Atom("coverage"), int64(5), int64(9000), int64(3)})
	require.Equal(t, Coverage{Running: true, Started: 5, Subscribed: true, Since: 9000, Cleared: 3}, c)
	c = parseCoverage(etf.Tuple{etf.Atom("coverage"), int64(5), etf.Atom("undefined"), int64(0)})
	require.True(t, c.Running)
	require.False(t, c.Subscribed)
	require.False(t, parseCoverage(etf.Atom("no_recorder")).Running)
}
