package history

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/term"
)

// ms is a time in the hand-made histories: milliseconds from an arbitrary
// origin, as ns.
func ms(v float64) int64 { return int64(v * 1e6) }

func store(node string, c int, key string, val uint32, call, ret float64, out Outcome) Op {
	return Op{Node: node, Client: c, Kind: Store, Key: key, Digest: val, Call: ms(call), Return: ms(ret), Outcome: out}
}

func del(node string, c int, key string, call, ret float64, out Outcome) Op {
	return Op{Node: node, Client: c, Kind: Delete, Key: key, Call: ms(call), Return: ms(ret), Outcome: out}
}

func fetch(node string, c int, key string, val uint32, call, ret float64) Op {
	return Op{Node: node, Client: c, Kind: Fetch, Key: key, Digest: val, Call: ms(call), Return: ms(ret), Outcome: OK}
}

func miss(node string, c int, key string, call, ret float64) Op {
	return Op{Node: node, Client: c, Kind: Fetch, Key: key, Call: ms(call), Return: ms(ret), Outcome: NotFound}
}

func check(t *testing.T, opts Options, ops ...Op) *Result {
	t.Helper()
	r, err := Check(context.Background(), &History{Ops: ops}, opts)
	require.NoError(t, err)
	var b bytes.Buffer
	r.Report(&b)
	t.Log(b.String())
	return r
}

func requireFailure(t *testing.T, r *Result, key, diagnosis string) {
	t.Helper()
	require.False(t, r.OK())
	require.Len(t, r.Failures, 1)
	require.Equal(t, key, r.Failures[0].Key)
	require.Contains(t, r.Failures[0].Diagnosis, diagnosis)
}

func TestLinearizableHistories(t *testing.T) {
	r := check(t, Options{},
		// key a: plain sequence, a concurrent store read either way
		store("n1", 1, "a", 10, 0, 1, OK),
		fetch("n2", 1, "a", 10, 2, 3),
		store("n1", 1, "a", 11, 4, 10, OK),
		fetch("n2", 1, "a", 10, 5, 6), // before the store took effect
		fetch("n3", 1, "a", 11, 7, 8), // after it
		del("n2", 2, "a", 11, 12, OK),
		miss("n1", 1, "a", 13, 14),
		// key b: a failed store may have happened, even long after
		store("n1", 2, "b", 20, 0, 1, OK),
		store("n2", 2, "b", 21, 2, 3, Timeout),
		fetch("n1", 3, "b", 20, 4, 5),
		fetch("n1", 3, "b", 21, 30, 31),
		// key c: a failed delete, then both outcomes seen in order
		store("n1", 2, "c", 30, 0, 1, OK),
		del("n2", 2, "c", 2, 3, Error),
		fetch("n1", 3, "c", 30, 4, 5),
		miss("n1", 3, "c", 6, 7),
		// a failed read tells nothing
		Op{Node: "n3", Client: 1, Kind: Fetch, Key: "c", Call: ms(8), Return: ms(9), Outcome: Error},
		// key d: never written, read absent
		miss("n1", 1, "d", 0, 1),
	)
	require.True(t, r.OK())
	require.Equal(t, 17, r.Ops)
	require.Equal(t, 4, r.Keys)
	require.Equal(t, 1, r.FailedReads)
	require.Equal(t, 2, r.MaybeWrites)
	require.Contains(t, r.Summary(), "linearizable per key")
}

func TestStaleRead(t *testing.T) {
	r := check(t, Options{},
		store("n1", 1, "k", 1, 0, 1, OK),
		store("n2", 1, "k", 2, 2, 3, OK),
		fetch("n3", 1, "k", 1, 4, 5))
	requireFailure(t, r, "k", "stale read")
}

func TestLostWrite(t *testing.T) {
	r := check(t, Options{},
		store("n1", 1, "k", 1, 0, 1, OK),
		miss("n1", 1, "k", 2, 3))
	requireFailure(t, r, "k", "lost write")
}

func TestResurrectedDelete(t *testing.T) {
	r := check(t, Options{},
		store("n1", 1, "k", 1, 0, 1, OK),
		del("n2", 1, "k", 2, 3, OK),
		fetch("n1", 1, "k", 1, 4, 5))
	requireFailure(t, r, "k", "resurrected delete")
}

func TestValueNobodyWrote(t *testing.T) {
	r := check(t, Options{},
		store("n1", 1, "k", 1, 0, 1, OK),
		fetch("n1", 1, "k", 99, 2, 3))
	requireFailure(t, r, "k", "a value nobody wrote")
}

// Two reads each plausible alone, impossible together: a maybe-write seen,
// then the value before it again.
func TestNoSingleOrder(t *testing.T) {
	r := check(t, Options{},
		store("n1", 1, "k", 1, 0, 1, OK),
		store("n2", 1, "k", 2, 2, 3, Timeout),
		fetch("n3", 1, "k", 2, 4, 5),
		fetch("n3", 1, "k", 1, 6, 7))
	requireFailure(t, r, "k", "no single order")
}

func TestVisualizationOnFailure(t *testing.T) {
	dir := t.TempDir()
	r := check(t, Options{VisualizeDir: dir},
		store("n1", 1, "lg-n1@127.0.0.1-x-1", 1, 0, 1, OK),
		store("n1", 1, "lg-n1@127.0.0.1-x-1", 2, 2, 3, OK),
		fetch("n2", 1, "lg-n1@127.0.0.1-x-1", 1, 4, 5),
		store("n1", 1, "fine", 1, 0, 1, OK),
		fetch("n2", 1, "fine", 1, 4, 5))
	require.Len(t, r.Failures, 1)
	p := r.Failures[0].Visualization
	require.NotEmpty(t, p)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Contains(t, string(b), "<html")
	txt := r.Failures[0].Text(r.Start)
	require.Contains(t, txt, "fetch lg-n1@127.0.0.1-x-1 -> 00000001")
	require.Contains(t, txt, "visualization: "+p)
}

// A split from 10 to 20 ms. During it n1 and n3 are on different sides:
// their reads disagree, which is reported, not judged. After the heal the
// key must hold what the later change wrote.
func TestSplitAndHeal(t *testing.T) {
	base := time.Unix(0, 0)
	win := []Window{{Start: base.Add(10 * time.Millisecond), End: base.Add(20 * time.Millisecond)}}
	during := []Op{
		store("n1", 1, "k", 1, 0, 1, OK),
		fetch("n3", 1, "k", 1, 2, 3),
		store("n1", 1, "k", 2, 11, 12, OK), // winner's side
		fetch("n1", 1, "k", 2, 12.2, 12.5), // each side sees its own
		store("n3", 1, "k", 3, 13, 14, OK), // loser's side, later
		fetch("n3", 1, "k", 3, 15, 16),
		// key d: deleted on the loser's side after the winner wrote it
		store("n1", 1, "d", 1, 0, 1, OK),
		store("n1", 1, "d", 2, 11, 12, OK),
		del("n3", 1, "d", 13, 14, OK),
		// key w: written before the split only
		store("n1", 2, "w", 7, 0, 1, OK),
	}
	t.Run("rule kept", func(t *testing.T) {
		r := check(t, Options{Splits: win}, append(during,
			fetch("n1", 1, "k", 3, 21, 22),
			miss("n1", 1, "d", 21, 22),
			fetch("n2", 1, "w", 7, 21, 22))...)
		require.True(t, r.OK())
		require.Equal(t, 3, r.HealKeys)
		require.Len(t, r.Splits, 1)
		require.Equal(t, 2, r.Splits[0].KeysWritten)
		require.Equal(t, 1, r.Splits[0].Deletes)
		require.Contains(t, r.Summary(), "heal rule held for 3 keys")
	})
	t.Run("earlier change kept", func(t *testing.T) {
		r := check(t, Options{Splits: win}, append(during, fetch("n1", 1, "k", 2, 21, 22))...)
		requireFailure(t, r, "k", "stale read")
		require.Equal(t, 1, r.Failures[0].Segment)
		require.Equal(t, []string{"00000003"}, r.Failures[0].Initial)
	})
	t.Run("a later fetch on the other side keeps the older value", func(t *testing.T) {
		// erlmcp's fetch rewrites the row (last_accessed): the later change
		r := check(t, Options{Splits: win}, append(during,
			fetch("n1", 1, "k", 2, 16, 17),
			fetch("n2", 1, "k", 2, 21, 22))...)
		require.True(t, r.OK())
		require.Equal(t, 1, r.Splits[0].KeptByTouch)
	})
	t.Run("deletion undone", func(t *testing.T) {
		r := check(t, Options{Splits: win}, append(during, fetch("n1", 1, "d", 2, 21, 22))...)
		requireFailure(t, r, "d", "resurrected delete")
	})
	t.Run("value nobody wrote", func(t *testing.T) {
		r := check(t, Options{Splits: win}, append(during, fetch("n1", 1, "w", 8, 21, 22))...)
		requireFailure(t, r, "w", "a value nobody wrote")
	})
	t.Run("lost", func(t *testing.T) {
		r := check(t, Options{Splits: win}, append(during, miss("n2", 1, "w", 21, 22))...)
		requireFailure(t, r, "w", "lost write")
	})
	t.Run("concurrent changes on both sides: either", func(t *testing.T) {
		ops := []Op{
			store("n1", 1, "c", 1, 11, 15, OK),
			store("n3", 1, "c", 2, 12, 14, OK),
		}
		require.True(t, check(t, Options{Splits: win}, append(ops, fetch("n2", 1, "c", 1, 21, 22))...).OK())
		require.True(t, check(t, Options{Splits: win}, append(ops, fetch("n2", 1, "c", 2, 21, 22))...).OK())
		require.False(t, check(t, Options{Splits: win}, append(ops, miss("n2", 1, "c", 21, 22))...).OK())
	})
	t.Run("pre-split history is judged", func(t *testing.T) {
		r := check(t, Options{Splits: win}, store("n1", 1, "p", 1, 0, 1, OK), miss("n2", 1, "p", 2, 3))
		requireFailure(t, r, "p", "lost write")
		require.Equal(t, 0, r.Failures[0].Segment)
	})
}

func TestDecode(t *testing.T) {
	hdr := term.Map{
		{Key: term.Atom("node"), Value: term.Atom("a@127.0.0.1")},
		{Key: term.Atom("name"), Value: term.Binary("lg")},
		{Key: term.Atom("shared"), Value: term.Atom("true")},
		{Key: term.Atom("workers"), Value: int64(8)},
		{Key: term.Atom("time_offset_ns"), Value: int64(1_000_000_000)},
		{Key: term.Atom("time_warp_mode"), Value: term.Atom("no_time_warp")},
		{Key: term.Atom("system_time_ns"), Value: int64(5)},
		{Key: term.Atom("os_system_time_ns"), Value: int64(3)},
	}
	ops := term.List{Elems: []term.Term{
		term.Tuple{int64(1), term.Atom("store"), term.Binary("k1"), int64(4294967295), int64(-10), int64(-5), term.Atom("ok")},
		term.Tuple{int64(2), term.Atom("fetch"), term.Binary("k1"), int64(0), int64(-4), int64(-3), term.Atom("not_found")},
		term.Tuple{int64(0), term.Atom("delete"), term.Binary("k1"), int64(0), int64(-2), int64(-1), term.Atom("timeout")},
	}}
	blob, err := term.Encode(term.Tuple{term.Atom("migctl_history"), int64(1), hdr, ops})
	require.NoError(t, err)
	h, err := Decode(blob)
	require.NoError(t, err)
	require.Equal(t, []NodeInfo{{Node: "a@127.0.0.1", Name: "lg", Shared: true, Workers: 8, TimeOffsetNs: 1e9, ClockSkewNs: 2}}, h.Nodes)
	require.Equal(t, Op{Node: "a@127.0.0.1", Client: 1, Kind: Store, Key: "k1", Digest: 0xffffffff, Call: 1e9 - 10, Return: 1e9 - 5, Outcome: OK}, h.Ops[0])
	require.Equal(t, NotFound, h.Ops[1].Outcome)
	require.Equal(t, Delete, h.Ops[2].Kind)
	require.True(t, h.Ops[2].Outcome.Failed())

	// Files round trip and merge in call order.
	dir := t.TempDir()
	p, err := WriteFile(dir, "a@127.0.0.1", blob)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(p, "a_127.0.0.1.history.etf"))
	m, err := ReadFiles(p, p)
	require.NoError(t, err)
	require.Len(t, m.Ops, 6)
	for i := 1; i < len(m.Ops); i++ {
		require.LessOrEqual(t, m.Ops[i-1].Call, m.Ops[i].Call)
	}

	hdr[5].Value = term.Atom("multi_time_warp")
	blob, err = term.Encode(term.Tuple{term.Atom("migctl_history"), int64(1), hdr, ops})
	require.NoError(t, err)
	_, err = Decode(blob)
	require.ErrorIs(t, err, ErrFormat)
	_, err = Decode([]byte{131, 100, 0, 1, 'x'})
	require.ErrorIs(t, err, ErrFormat)
}

// A store on the winner's side still in flight when the heal ended may
// land after a read that saw the loser's value: that read is fine (seen
// in a real run).
func TestWriteInFlightAtHealEnd(t *testing.T) {
	base := time.Unix(0, 0)
	win := []Window{{Start: base.Add(10 * time.Millisecond), End: base.Add(20 * time.Millisecond)}}
	r := check(t, Options{Splits: win},
		store("n3", 1, "k", 1, 12, 13, OK),
		store("n2", 1, "k", 2, 19, 25, OK),
		fetch("n1", 1, "k", 1, 21, 22),
		fetch("n1", 1, "k", 2, 26, 27))
	require.True(t, r.OK())
	r = check(t, Options{Splits: win},
		store("n3", 1, "k", 1, 12, 13, OK),
		store("n2", 1, "k", 2, 19, 25, OK),
		fetch("n1", 1, "k", 2, 21, 22),
		fetch("n1", 1, "k", 1, 26, 27))
	requireFailure(t, r, "k", "") // the old value after the store returned
}
