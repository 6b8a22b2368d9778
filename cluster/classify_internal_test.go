package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The rules of the package documentation, at the edges of the keep window:
// split T = 10 000, window from K = 8 000.
func TestClassifyKeepWindow(t *testing.T) {
	lp := LoserPlan{SplitAt: 10000, KeepFrom: 8000}
	k := func(written, la int64, digest uint32) keyInfo {
		return keyInfo{Written: written, Created: 1, LastAccessed: la, Digest: digest}
	}
	wk := map[string]keyInfo{
		"w-old":    k(7999, 7999, 1),   // only on the winner, before the window: the loser deleted it
		"w-edge":   k(8000, 8000, 1),   // only on the winner, in the window: may not have reached the loser
		"w-split":  k(10000, 10000, 1), // only on the winner, written in the split
		"both-new": k(9500, 9500, 1),   // both, loser's near-split write newer
		"both-old": k(5000, 9900, 1),   // both, loser's copy is older than the window
		"same":     k(100, 100, 7),
	}
	lk := map[string]keyInfo{
		"l-old":    k(7999, 7999, 2),
		"l-near":   k(9999, 9999, 2),
		"l-split":  k(10001, 10001, 2),
		"both-new": k(9600, 9700, 2),
		"both-old": k(7000, 9999, 2),
		"same":     k(100, 100, 7),
	}
	classify(&lp, wk, lk)
	act := map[string]string{}
	for _, d := range lp.Decisions {
		act[d.ID] = d.Action
	}
	require.Equal(t, map[string]string{
		"w-old":    ActDelete,
		"l-near":   ActWrite,
		"l-split":  ActWrite,
		"both-new": ActWrite,
	}, act)
	ids := func(cs []KeyChange) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.On+":"+c.ID)
		}
		return out
	}
	require.Equal(t, []string{"loser:l-near", "winner:w-edge"}, ids(lp.KeptNearSplit))
	require.Equal(t, []string{":w-old"}, ids(lp.DeletedOnLoser))
	require.Equal(t, []string{":l-old"}, ids(lp.DeletedOnWinner))
	require.Equal(t, []string{":l-split"}, ids(lp.WrittenOnLoser))
	require.Equal(t, []string{":w-split"}, ids(lp.WrittenOnWinner))

	// A plan journaled by an older migctl has no window: deletions up to T.
	old := LoserPlan{SplitAt: 10000}
	require.Equal(t, int64(10000), old.deleteBefore())
	classify(&old, map[string]keyInfo{"w": k(9999, 9999, 1)}, map[string]keyInfo{})
	require.Equal(t, ActDelete, old.Decisions[0].Action)
}

func TestAutoKeepWindow(t *testing.T) {
	require.Equal(t, "1m17s", autoKeepWindow(60).String(), "OTP's default net_ticktime")
	require.Equal(t, "4.5s", autoKeepWindow(2).String())
}
