package journal

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
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

// A journal that must exist is never created by opening it: a mistyped
// path fails with ErrNoJournal and leaves no directory or file behind.
func TestMustExistAndReadOnly(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo", "j.db")
	for _, o := range []Options{{MustExist: true}, {ReadOnly: true}} {
		_, err := Open(missing, o)
		require.ErrorIs(t, err, ErrNoJournal)
		require.EqualError(t, err, "no journal at "+missing)
		_, err = os.Stat(filepath.Dir(missing))
		require.ErrorIs(t, err, fs.ErrNotExist, "no directory created")
	}

	path := filepath.Join(dir, "j.db")
	w, err := Open(path, Options{})
	require.NoError(t, err)
	_, err = w.Append("phase_change", "r", map[string]int{"n": 1})
	require.NoError(t, err)
	_, err = w.Append("cluster.heal", "", map[string]int{"n": 2})
	require.NoError(t, err)
	_, err = w.Append("cluster.heal.step", "", map[string]int{"n": 3})
	require.NoError(t, err)

	r, err := Open(path, Options{ReadOnly: true})
	require.NoError(t, err)
	es, err := r.ListKinds([]string{"cluster.heal", "cluster.heal.step"}, 0)
	require.NoError(t, err)
	require.Len(t, es, 2)
	es, err = r.ListKinds([]string{"cluster.heal", "cluster.heal.step"}, 1)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, "cluster.heal.step", es[0].Kind, "the newest")
	_, err = r.Append("x", "", nil)
	require.ErrorIs(t, err, ErrReadOnly)
	require.NoError(t, r.Check())

	// A bbolt file without migctl's buckets reads as empty.
	empty := filepath.Join(dir, "empty.db")
	db, err := bolt.Open(empty, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	r, err = Open(empty, Options{ReadOnly: true})
	require.NoError(t, err)
	es, err = r.List("", 0)
	require.NoError(t, err)
	require.Empty(t, es)
	_, err = r.Get(1)
	require.ErrorIs(t, err, ErrNotFound)
}

// Prune deletes only the entries of its kind older than the cut, oldest
// first, at most limit a call; every other entry stays, and the file stops
// growing once the pruned records' pages are reused.
func TestPruneKeepsOtherKindsAndNewerEntries(t *testing.T) {
	j := open(t)
	var checks, phases []uint64
	for i := range 30 {
		s, err := j.Append("check", "", map[string]int{"i": i})
		require.NoError(t, err)
		checks = append(checks, s)
		if i%10 == 0 {
			s, err := j.Append("phase", "", map[string]int{"i": i})
			require.NoError(t, err)
			phases = append(phases, s)
		}
	}
	time.Sleep(10 * time.Millisecond)
	cut := time.Now()
	time.Sleep(10 * time.Millisecond)
	newer, err := j.Append("check", "", map[string]int{"i": 30})
	require.NoError(t, err)

	n, err := j.Prune("check", cut, 20)
	require.NoError(t, err)
	require.Equal(t, 20, n, "at most limit a call")
	n, err = j.Prune("check", cut, 20)
	require.NoError(t, err)
	require.Equal(t, 10, n, "then the rest")
	n, err = j.Prune("check", cut, 20)
	require.NoError(t, err)
	require.Zero(t, n)

	left, err := j.List("check", 0)
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, newer, left[0].Seq, "the check newer than the cut stays")
	ps, err := j.List("phase", 0)
	require.NoError(t, err)
	require.Len(t, ps, len(phases), "other kinds are never pruned")
	for _, s := range checks {
		_, err := j.Get(s)
		require.ErrorIs(t, err, ErrNotFound)
	}

	// A journal that appends and prunes as a monitor does stops growing.
	big := strings.Repeat("x", 3000)
	size := func() int64 {
		fi, err := os.Stat(j.Path())
		require.NoError(t, err)
		return fi.Size()
	}
	var sizes []int64
	for range 6 {
		for range 800 {
			_, err := j.Append("check", "", map[string]string{"pad": big})
			require.NoError(t, err)
		}
		_, err := j.Prune("check", time.Now(), 0)
		require.NoError(t, err)
		sizes = append(sizes, size())
	}
	t.Logf("file size after each round of 800 appends and a prune: %v", sizes)
	require.Greater(t, sizes[0], int64(2<<20), "a round's records need more than the empty file (else this proves nothing)")
	require.Equal(t, sizes[1], sizes[len(sizes)-1], "the freed pages are reused: no growth after the first rounds")
}
