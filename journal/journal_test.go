package journal

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func open(t *testing.T) *Journal {
	j, err := Open(filepath.Join(t.TempDir(), "j", "journal.db"), Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, j.Check()) })
	return j
}

func TestAppendListUpdate(t *testing.T) {
	j := open(t)
	type change struct{ From, To string }
	s1, err := j.Append("phase", "go", change{"phase0", "phase1"})
	require.NoError(t, err)
	_, err = j.Append("backfill", "", map[string]int{"n": 1})
	require.NoError(t, err)
	s3, err := j.Append("phase", "", change{"phase1", "phase2"})
	require.NoError(t, err)
	require.Less(t, s1, s3)

	l, err := j.List("phase", 0)
	require.NoError(t, err)
	require.Len(t, l, 2)
	var c change
	require.NoError(t, l[0].Decode(&c))
	require.Equal(t, change{"phase0", "phase1"}, c)
	require.Equal(t, "go", l[0].Reason)

	require.NoError(t, j.Update(s1, change{"phase0", "phaseX"}))
	e, err := j.Get(s1)
	require.NoError(t, err)
	require.NoError(t, e.Decode(&c))
	require.Equal(t, "phaseX", c.To)

	last, err := j.List("", 1)
	require.NoError(t, err)
	require.Equal(t, s3, last[0].Seq)
	_, err = j.Get(999)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestStateAndBind(t *testing.T) {
	j := open(t)
	ok, err := j.GetState("checkpoint", "x", new(int))
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, j.PutState("checkpoint", "x", 42))
	var v int
	ok, err = j.GetState("checkpoint", "x", &v)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 42, v)
	require.NoError(t, j.DeleteState("checkpoint", "x"))
	ok, _ = j.GetState("checkpoint", "x", &v)
	require.False(t, ok)

	require.NoError(t, j.Bind("cluster-a"))
	require.NoError(t, j.Bind("cluster-a"))
	require.ErrorIs(t, j.Bind("cluster-b"), ErrOtherCluster)
}

func TestConcurrentWriters(t *testing.T) {
	j := open(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				_, err := j.Append("x", "", k)
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	l, err := j.List("x", 0)
	require.NoError(t, err)
	require.Len(t, l, 80)
}
