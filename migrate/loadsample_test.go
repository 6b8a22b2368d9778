package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/testkit"
)

// TestLoadSampleFromNode reads the throttle's load samples from a real
// node through the agent stub: the backfill's watcher drops a sample it
// cannot read (and never throttles on it), so a reply the decode rejects
// would go unnoticed anywhere else.
func TestLoadSampleFromNode(t *testing.T) {
	ctx := tctx(t, 60*time.Second)
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	m := newMigrator(t, cl, newJournal(t))
	node := cl.Names()[0]

	for range 2 { // the second call finds the overload watcher running
		s, over, err := m.sampleLoad(ctx, node)
		require.NoError(t, err)
		require.Equal(t, node, s.Node)
		require.False(t, s.At.IsZero())
		require.True(t, s.SchedUtil == -1 || (s.SchedUtil >= 0 && s.SchedUtil <= 1), "sched_util %v", s.SchedUtil)
		require.GreaterOrEqual(t, s.RunQueue, int64(0))
		require.GreaterOrEqual(t, s.StoreQueue, int64(0))
		require.GreaterOrEqual(t, s.MnesiaQueue, int64(0))
		require.GreaterOrEqual(t, over, int64(0))
	}
	require.NoError(t, m.api().StopWatch(ctx, node))
}
