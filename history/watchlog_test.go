package history

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWindowsFromWatchLog(t *testing.T) {
	log := `2026-11-28T01:22:24Z HEALTHY (start) islands [[a b c]]
2026-11-28T01:22:41.407Z event mnesia_down on c b
2026-11-28T01:22:41.417Z PARTITIONED (event) islands [[a] [b] [c]]
  split: a and b share a schema ...
2026-11-28T01:22:45.000Z PARTITIONED (poll) islands [[a b] [c]]
2026-11-28T01:23:10.5Z HEALTHY (event) islands [[a b c]]
time=2026-11-28T01:23:11Z level=WARN msg="closing connections"
2026-11-28T01:30:00Z PARTITIONED (event) islands [[a b] [c]]
`
	w, err := WindowsFromWatchLog(strings.NewReader(log), 2*time.Second, 5*time.Second)
	require.NoError(t, err)
	require.Len(t, w, 2)
	require.Equal(t, "2026-11-28T01:22:39.417Z", w[0].Start.UTC().Format(time.RFC3339Nano))
	require.Equal(t, "2026-11-28T01:23:15.5Z", w[0].End.UTC().Format(time.RFC3339Nano))
	require.Equal(t, "2026-11-28T01:29:58Z", w[1].Start.UTC().Format(time.RFC3339Nano))
	require.True(t, w[1].End.After(time.Now().Add(100*365*24*time.Hour)), "still split at the end")
}
