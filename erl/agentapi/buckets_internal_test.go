package agentapi

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
)

// keyFrame builds a frame as migctl_buckets:frame/5 writes it.
func keyFrame(id string, digest uint32, la int64, times []int64) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, digest)
	b = binary.BigEndian.AppendUint64(b, uint64(la))
	for _, t := range times {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	return b
}

func TestParseKeys(t *testing.T) {
	plain := append(keyFrame("a", 7, 100, nil), keyFrame("bb", 8, -1, nil)...)
	got := map[string]Key{}
	if err := parseKeys(plain, false, got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]Key{"a": {Digest: 7, LastAccessed: 100}, "bb": {Digest: 8, LastAccessed: -1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plain frames: %v, want %v", got, want)
	}
	timed := keyFrame("c", 9, -1, []int64{1234, -1})
	got = map[string]Key{}
	if err := parseKeys(timed, true, got); err != nil {
		t.Fatal(err)
	}
	if want := (Key{Digest: 9, LastAccessed: -1, Written: 1234, Created: -1}); got["c"] != want {
		t.Fatalf("timed frame: %+v, want %+v", got["c"], want)
	}
	// A frame cut short, or read with the wrong shape, is an error, not a
	// silent partial map.
	for name, b := range map[string][]byte{
		"truncated":           plain[:len(plain)-1],
		"times expected":      keyFrame("a", 7, 100, nil),
		"length past the end": {0, 0, 0, 9, 'x'},
	} {
		if err := parseKeys(b, name == "times expected", map[string]Key{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseOdd(t *testing.T) {
	b := binary.BigEndian.AppendUint32(nil, 12)
	b = binary.BigEndian.AppendUint32(b, 3)
	b = append(b, "foo"...)
	o, err := ParseOdd(b)
	if err != nil || o.N != 12 || !reflect.DeepEqual(o.Keys, []string{"foo"}) {
		t.Fatalf("ParseOdd = %+v, %v", o, err)
	}
	if _, err := ParseOdd(b[:6]); err == nil {
		t.Fatal("a cut key frame is an error")
	}
	if _, err := ParseOdd(nil); err == nil {
		t.Fatal("an empty Odd is an error (the count is always there)")
	}
}

func TestEncodeRanges(t *testing.T) {
	b := EncodeRanges([]bucketdiff.Range{{Span: bucketdiff.Full, Buckets: 3}, {Span: bucketdiff.Span{Lo: 5, Hi: 9}, Buckets: 1}})
	if len(b) != 40 {
		t.Fatalf("%d bytes, want 2 x <<Lo:64, Hi:64, Buckets:32>>", len(b))
	}
	if binary.BigEndian.Uint64(b[8:]) != 1<<32 || binary.BigEndian.Uint32(b[16:]) != 3 || binary.BigEndian.Uint64(b[20:]) != 5 {
		t.Fatalf("layout: %x", b)
	}
}

var bm = module{name: "migctl_buckets"}

// sumsBin builds sums/3's bucket binary: <<Count:32, Sum:64>> per bucket.
func sumsBin(counts ...uint64) []byte {
	var b []byte
	for i, c := range counts {
		b = binary.BigEndian.AppendUint32(b, uint32(c))
		b = binary.BigEndian.AppendUint64(b, uint64(100+i))
	}
	return b
}

// With ExcludeChanged the option goes out as {exclude_changed, Tab,
// SinceMs} and the reply has one element more, the rows left out; without
// it both are as before (the callers that never exclude see no change).
func TestSumsReplyExclude(t *testing.T) {
	odd := binary.BigEndian.AppendUint32(nil, 0)
	x := &ExcludeChanged{Table: "erlmcp_session", SinceMs: 1765000000000}
	require.Equal(t, erl.List{erl.Tuple{erl.Atom("la_quantum"), int64(120000)},
		erl.Tuple{erl.Atom("exclude_changed"), erl.Atom("erlmcp_session"), int64(1765000000000)}},
		SumOptions{LAQuantum: 120000, Exclude: x}.terms())
	require.Equal(t, erl.List{erl.Atom("max_written")}, SumOptions{MaxWritten: true}.terms())

	plain := erl.Tuple{erl.Atom("ok"), sumsBin(3, 4), 7, odd}
	r, err := bm.sumsReply("n@h", plain, 2, SumOptions{})
	require.NoError(t, err)
	require.Equal(t, []bucketdiff.Sum{{Count: 3, Sum: 100}, {Count: 4, Sum: 101}}, r.Sums)
	require.EqualValues(t, 7, r.Size)
	require.Zero(t, r.Excluded)
	require.EqualValues(t, 24+4, r.Bytes)

	r, err = bm.sumsReply("n@h", append(plain, uint16(12)), 2, SumOptions{Exclude: x})
	require.NoError(t, err)
	require.EqualValues(t, 12, r.Excluded)
	require.Len(t, r.Sums, 2)

	// An agent that does not know the option answers without the count:
	// a shape error, not a silent zero.
	_, err = bm.sumsReply("n@h", plain, 2, SumOptions{Exclude: x})
	requireShape(t, err, "migctl_buckets:sums")
	_, err = bm.sumsReply("n@h", append(plain, erl.Atom("x")), 2, SumOptions{Exclude: x})
	requireShape(t, err, "migctl_buckets:sums")
	_, err = bm.sumsReply("n@h", append(plain, 1), 2, SumOptions{})
	requireShape(t, err, "migctl_buckets:sums")
}

func TestKeysReplyExclude(t *testing.T) {
	odd := binary.BigEndian.AppendUint32(nil, 0)
	frames := append(keyFrame("a", 7, 100, nil), keyFrame("bb", 8, 5, nil)...)
	x := &ExcludeChanged{Table: "t", SinceMs: 5}
	require.Equal(t, erl.List{erl.Tuple{erl.Atom("limit"), 10}, erl.Tuple{erl.Atom("exclude_changed"), erl.Atom("t"), int64(5)}},
		KeyOptions{Limit: 10, Exclude: x}.terms())
	r, err := bm.keysReply("n@h", erl.Tuple{erl.Atom("ok"), frames, 2, odd, 3}, KeyOptions{Exclude: x})
	require.NoError(t, err)
	require.Equal(t, map[string]Key{"a": {Digest: 7, LastAccessed: 100}, "bb": {Digest: 8, LastAccessed: 5}}, r.Keys)
	require.EqualValues(t, 3, r.Excluded)
	r, err = bm.keysReply("n@h", erl.Tuple{erl.Atom("ok"), frames, 2, odd}, KeyOptions{})
	require.NoError(t, err)
	require.Len(t, r.Keys, 2)
	_, err = bm.keysReply("n@h", erl.Tuple{erl.Atom("ok"), frames, 2, odd}, KeyOptions{Exclude: x})
	requireShape(t, err, "migctl_buckets:keys")
}

// The agent's refusals (no recorder, or one that does not reach back far
// enough) are recognisable, with the node; other errors pass unchanged.
func TestRecorderErr(t *testing.T) {
	for _, reason := range []string{"no_recorder", "recorder_gap"} {
		err := recorderErr("n@h", "migctl_buckets:sums", &erl.Error{Op: "migctl_buckets:sums", Node: "n@h", Err: &erl.RPCError{Class: "error", Reason: reason}})
		require.ErrorIs(t, err, ErrNoRecorderCoverage)
		require.Contains(t, err.Error(), "n@h")
		require.Contains(t, err.Error(), reason)
	}
	other := &erl.Error{Op: "x", Node: "n@h", Err: &erl.RPCError{Class: "error", Reason: "bad_ranges"}}
	require.Equal(t, error(other), recorderErr("n@h", "x", other))
	require.False(t, errors.Is(recorderErr("n@h", "x", other), ErrNoRecorderCoverage))
}

func TestChangedRowsReply(t *testing.T) {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, 2)
	b = append(b, "ab"...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint32(b, 77)
	b = binary.BigEndian.AppendUint64(b, uint64(1234))
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "gone"...)
	b = append(b, 0)
	r, err := bm.changedRowsReply("n@h", erl.Tuple{erl.Atom("ok"), zip(b), 2})
	require.NoError(t, err)
	require.Equal(t, []string{"ab", "gone"}, r.Listed)
	require.Equal(t, map[string]Key{"ab": {Digest: 77, LastAccessed: 1234}}, r.Present)
	require.EqualValues(t, len(zip(b)), r.Bytes)

	for name, bad := range map[string]erl.Tuple{
		"count":     {erl.Atom("ok"), zip(b), 3},
		"cut":       {erl.Atom("ok"), zip(b[:len(b)-2]), 2},
		"cut row":   {erl.Atom("ok"), zip(b[:10]), 1},
		"presence":  {erl.Atom("ok"), zip(append(binary.BigEndian.AppendUint16(nil, 1), 'x', 7)), 1},
		"not zlib":  {erl.Atom("ok"), b, 2},
		"arity":     {erl.Atom("ok"), zip(b)},
		"not a bin": {erl.Atom("ok"), 5, 2},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bm.changedRowsReply("n@h", bad)
			requireShape(t, err, "migctl_buckets:changed_rows")
		})
	}
}

func TestChangedRowsPairedReply(t *testing.T) {
	frame := func(id string, present bool, digest uint32, la int64) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(len(id)))
		b = append(b, id...)
		if !present {
			return append(b, 0)
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, digest)
		return binary.BigEndian.AppendUint64(b, uint64(la))
	}
	src := append(frame("ab", true, 77, 1234), frame("gone", false, 0, 0)...)
	tgt := append(frame("ab", true, 78, 1235), frame("gone", true, 5, 6)...)
	a, b, err := bm.changedRowsPairedReply("n@h", erl.Tuple{erl.Atom("ok"), zip(src), 2, zip(tgt)})
	require.NoError(t, err)
	require.Equal(t, []string{"ab", "gone"}, a.Listed)
	require.Equal(t, a.Listed, b.Listed)
	require.Equal(t, map[string]Key{"ab": {Digest: 77, LastAccessed: 1234}}, a.Present)
	require.Equal(t, map[string]Key{"ab": {Digest: 78, LastAccessed: 1235}, "gone": {Digest: 5, LastAccessed: 6}}, b.Present)

	other := append(frame("ab", true, 78, 1235), frame("else", true, 5, 6)...)
	for name, bad := range map[string]erl.Tuple{
		"other keys":   {erl.Atom("ok"), zip(src), 2, zip(other)},
		"short pair":   {erl.Atom("ok"), zip(src), 2, zip(frame("ab", true, 1, 1))},
		"arity":        {erl.Atom("ok"), zip(src), 2},
		"pair not bin": {erl.Atom("ok"), zip(src), 2, 7},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := bm.changedRowsPairedReply("n@h", bad)
			requireShape(t, err, "migctl_buckets:changed_rows")
		})
	}
}
