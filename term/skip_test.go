package term

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func sessionLike(t testing.TB, metadata Term) []byte {
	t.Helper()
	b, err := Encode(Map{
		{Atom("id"), Binary("0123456789ABCDEF0123456789ABCDEF")},
		{Atom("created_at"), int64(1700000000000)},
		{Atom("last_accessed"), int64(1700000005000)},
		{Atom("timeout_ms"), Atom("infinity")},
		{Atom("metadata"), metadata},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLookupMapKeys(t *testing.T) {
	b := sessionLike(t, Map{{Binary("blob"), Binary(bytes.Repeat([]byte{1}, 1<<20))}})
	vals, err := LookupMapKeys(b, "last_accessed", "nope", "id", "timeout_ms")
	if err != nil {
		t.Fatal(err)
	}
	want := []Term{int64(1700000005000), nil, Binary("0123456789ABCDEF0123456789ABCDEF"), Atom("infinity")}
	for i := range want {
		if (want[i] == nil) != (vals[i] == nil) || (want[i] != nil && !Equal(vals[i], want[i])) {
			t.Errorf("value %d = %s, want %s", i, Format(vals[i]), Format(want[i]))
		}
	}

	raws, err := LookupMapKeysRaw(b, "metadata")
	if err != nil {
		t.Fatal(err)
	}
	if raws[0][0] != tagMap || len(raws[0]) < 1<<20 {
		t.Errorf("raw metadata is %d bytes starting with tag %d", len(raws[0]), raws[0][0])
	}
}

func TestLookupMapKeysMatchesEveryAtomEncoding(t *testing.T) {
	for _, opts := range []EncodeOptions{{}, {UTF8Atoms: true}} {
		b, _ := opts.Encode(Map{{Atom("é"), int64(1)}, {Atom("日本"), int64(2)}, {Binary("id"), int64(3)}})
		vals, err := LookupMapKeys(b, "日本", "é", "id")
		if err != nil {
			t.Fatal(err)
		}
		if vals[0] != int64(2) || vals[1] != int64(1) || vals[2] != nil {
			t.Errorf("%+v: got %v", opts, vals)
		}
	}
	// SMALL_ATOM_EXT, which term_to_binary never writes, matches too.
	b := cat(blob(116), be32(1), []byte{115, 2, 'i', 'd', 97, 9})
	if vals, err := LookupMapKeys(b, "id"); err != nil || vals[0] != int64(9) {
		t.Errorf("SMALL_ATOM_EXT key: %v, %v", vals, err)
	}
}

func TestLookupMapKeysCompressed(t *testing.T) {
	plain := sessionLike(t, Map{})
	vals, err := LookupMapKeys(compress(plain[1:]), "created_at")
	if err != nil || vals[0] != int64(1700000000000) {
		t.Fatalf("got %v, %v", vals, err)
	}
}

func TestWalkMapErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"not a map", blob(104, 0), "top-level term is not a map (tag 104)"},
		{"no version", []byte{116}, "version byte"},
		{"truncated value", cat(blob(116), be32(1), []byte{97, 1, 109}, be32(10)), "BINARY_EXT length 10 exceeds"},
		{"trailing", cat(blob(116), be32(0), []byte{0}), "trailing"},
		{"huge arity", cat(blob(116), be32(1<<31)), "MAP_EXT length"},
	}
	for _, tc := range tests {
		err := WalkMap(tc.in, func(k, v []byte) bool { return true })
		var de *DecodeError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestWalkMapStopsEarly(t *testing.T) {
	// The second value is garbage; stopping after the first pair must not
	// look at it.
	b := cat(blob(116), be32(2), []byte{97, 1, 97, 2}, []byte{97, 3, 255})
	calls := 0
	err := WalkMap(b, func(k, v []byte) bool { calls++; return false })
	if err != nil || calls != 1 {
		t.Fatalf("calls %d, err %v", calls, err)
	}
}

func TestSkipMatchesDecode(t *testing.T) {
	terms := []Term{
		int64(1), int64(-1 << 40), 1.5, Atom("a"), Binary("xyz"), Bitstring{Bytes: []byte{0x80}, Bits: 1},
		Tuple{Nil{}, String("ab")}, List{Elems: []Term{int64(1)}, Tail: Atom("t")},
		Map{{Atom("k"), Map{{int64(1), Nil{}}}}}, Pid{Node: "n"}, Ref{Node: "n", ID: []uint32{1, 2, 3}},
		Port{Node: "n", ID: 1}, Port{Node: "n", ID: 1 << 40}, Export{Module: "m", Function: "f"},
		Opaque{Tag: 112, Raw: newFunBody(3)},
	}
	for _, x := range terms {
		b, err := Encode(x)
		if err != nil {
			t.Fatal(err)
		}
		padded := append(b[1:], 0xFF, 0xFF) // Skip must stop at the term's end
		if n, err := Skip(padded); err != nil || n != len(b)-1 {
			t.Errorf("Skip(%s) = %d, %v; want %d", Format(x), n, err, len(b)-1)
		}
	}
	// Old encodings, which Encode does not produce.
	for _, b := range [][]byte{
		cat([]byte{103}, atomExt("n"), make([]byte, 9)),
		cat([]byte{101}, atomExt("n"), make([]byte, 5)),
		cat([]byte{114, 0, 2}, atomExt("n"), make([]byte, 9)),
		cat([]byte{102}, atomExt("n"), make([]byte, 5)),
		cat([]byte{99}, make([]byte, 31)),
		cat([]byte{111}, be32(2), []byte{0, 1, 2}),
	} {
		if n, err := Skip(b); err != nil || n != len(b) {
			t.Errorf("Skip(%v) = %d, %v", b, n, err)
		}
	}
	if _, err := Skip([]byte{82, 1}); err == nil || !strings.Contains(err.Error(), "ATOM_CACHE_REF") {
		t.Errorf("Skip(ATOM_CACHE_REF) = %v", err)
	}
}
