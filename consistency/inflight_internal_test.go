package consistency

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl/agentapi"
)

func TestInFlightSince(t *testing.T) {
	const tab = "erlmcp_session"
	nodes := []string{"a@h", "b@h"}
	rec := func(since int64) agentapi.Recorder {
		return agentapi.Recorder{Running: true, Since: map[string]int64{tab: since}}
	}
	now := int64(1_765_000_000_000)

	// Both recorders cover well before the start: now minus the margin.
	since, why := inFlightSince(now, 5*time.Second, tab, nodes, []agentapi.Recorder{rec(now - 3_600_000), rec(now - 60_000)})
	require.Empty(t, why)
	require.Equal(t, now-5000, since)

	// One started 2 s ago: the start moves to its coverage (earlier keys
	// are compared in the buckets).
	since, why = inFlightSince(now, 5*time.Second, tab, nodes, []agentapi.Recorder{rec(now - 3_600_000), rec(now - 2000)})
	require.Empty(t, why)
	require.Equal(t, now-2000, since)

	// No exclusion, and the reason names the node.
	for name, c := range map[string]struct {
		infos []agentapi.Recorder
		want  string
	}{
		"not running":       {[]agentapi.Recorder{rec(now - 60_000), {Running: false}}, "no change recorder runs on b@h"},
		"not subscribed":    {[]agentapi.Recorder{rec(-1), rec(now - 60_000)}, "on a@h does not record erlmcp_session"},
		"table not asked":   {[]agentapi.Recorder{rec(now - 60_000), {Running: true, Since: map[string]int64{"other": 1}}}, "on b@h does not record"},
		"coverage from now": {[]agentapi.Recorder{rec(now - 60_000), rec(now + 10)}, "after the check's start"},
	} {
		t.Run(name, func(t *testing.T) {
			_, why := inFlightSince(now, 5*time.Second, tab, nodes, c.infos)
			require.Contains(t, why, c.want)
		})
	}
}

// The keys read by key replace what the rounds listed for them, on both
// sides; a key neither side holds leaves the listing; other rows stay.
func TestMergeByKey(t *testing.T) {
	l := listing{
		src: map[string]digestRow{"keep": {Digest: 1}, "hot": {Digest: 2}, "gone": {Digest: 3}},
		tgt: map[string]digestRow{"keep": {Digest: 1}, "gone": {Digest: 3}},
	}
	mergeByKey(&l, []string{"hot", "gone", "new"},
		map[string]digestRow{"hot": {Digest: 20, LastAccessed: 5}, "new": {Digest: 7}},
		map[string]digestRow{"hot": {Digest: 20, LastAccessed: 6}})
	require.Equal(t, map[string]digestRow{"keep": {Digest: 1}, "hot": {Digest: 20, LastAccessed: 5}, "new": {Digest: 7}}, l.src)
	require.Equal(t, map[string]digestRow{"keep": {Digest: 1}, "hot": {Digest: 20, LastAccessed: 6}}, l.tgt)
}

// Every key any node listed is read back; on a side, the keys one of its
// parts did not list are read again there (that part's store was not
// asked about them).
func TestUnionAndUncovered(t *testing.T) {
	src := []map[string]bool{{"a": true, "b": true}}
	tgt := []map[string]bool{{"b": true, "c": true}, {"a": true, "b": true, "c": true}}
	all := unionKeys(append(src, tgt...))
	require.Equal(t, []string{"a", "b", "c"}, all)
	require.Equal(t, []string{"c"}, uncovered(all, src))
	require.Equal(t, []string{"a"}, uncovered(all, tgt))
	require.Empty(t, uncovered(all, []map[string]bool{{"a": true, "b": true, "c": true}}))
}

func TestTooManyChanged(t *testing.T) {
	require.Empty(t, tooManyChanged(0, 0))
	require.Empty(t, tooManyChanged(1000, 30000))
	require.Empty(t, tooManyChanged(100, 1600))
	require.Contains(t, tooManyChanged(101, 1600), "101 keys changed")
	require.NotEmpty(t, tooManyChanged(5000, 5000))
}
