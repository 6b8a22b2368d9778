package term

import (
	"bytes"
	"math"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erlmcp/migctl/term/erltest"
)

// TestErlangRoundTrip is the package's core guarantee, checked against the
// VM: for every blob term_to_binary produces, Encode(Decode(b)) is b byte
// for byte, and the VM reads what Encode writes back as the same term.
//
// One escript run writes the blobs (cases.escript lists the cases:
// UTF-8 session ids, infinity, every integer and float boundary, a 1 MB
// binary, improper lists, >65535-element lists, maps of 32, 33 and 1000
// keys, nesting 100-500 deep, pids, refs, ports, funs, ...), Go re-encodes
// them under each term_to_binary minor version, and a second run has the VM
// check Go's bytes.
func TestErlangRoundTrip(t *testing.T) {
	dir := t.TempDir()
	erltest.Escript(t, "testdata/erlang/cases.escript", dir)

	variants := []struct {
		name string
		opts EncodeOptions
	}{
		{"v1", EncodeOptions{}},
		{"v2", EncodeOptions{UTF8Atoms: true}},
		{"v0", EncodeOptions{TextFloats: true}},
	}
	v1 := erltest.ReadDir(t, filepath.Join(dir, "v1"), ".etf")
	if len(v1) < 90 {
		t.Fatalf("cases.escript wrote only %d cases", len(v1))
	}
	written := 0
	for _, v := range variants {
		for name, b := range erltest.ReadDir(t, filepath.Join(dir, v.name), ".etf") {
			x, err := Decode(b)
			if err != nil {
				t.Errorf("%s/%s: Decode: %v", v.name, name, err)
				continue
			}
			enc, err := v.opts.Encode(x)
			if err != nil {
				t.Errorf("%s/%s: Encode: %v", v.name, name, err)
				continue
			}
			if !bytes.Equal(enc, b) {
				t.Errorf("%s/%s: Encode(Decode(b)) != b: %s\nterm: %s", v.name, name, firstDiff(enc, b), Format(x))
			}
			// The aliasing decoder and the skipper must agree with Decode.
			if y, err := (DecodeOptions{NoCopy: true}).Decode(b); err != nil || !Equal(x, y) {
				t.Errorf("%s/%s: NoCopy decode differs (err %v)", v.name, name, err)
			}
			if n, err := Skip(b[1:]); err != nil || n != len(b)-1 {
				t.Errorf("%s/%s: Skip = %d, %v; want %d", v.name, name, n, err, len(b)-1)
			}
			erltest.WriteFile(t, filepath.Join(dir, "go", v.name), name+".etf", enc)
			written++
		}
	}

	// Compressed blobs decode to the same terms as plain ones.
	for name, z := range erltest.ReadDir(t, filepath.Join(dir, "z"), ".etf") {
		x, err := Decode(z)
		if err != nil {
			t.Errorf("z/%s: Decode: %v", name, err)
			continue
		}
		if y, _ := Decode(v1[name]); !Equal(x, y) {
			t.Errorf("z/%s: compressed blob decodes to a different term", name)
		}
	}

	// Terms built in Go (maps in arbitrary order, lists with list tails,
	// Go integer types, ...) must encode exactly as term_to_binary encodes
	// the equivalent Erlang expression.
	for _, c := range nativeCases() {
		enc, err := Encode(c.term)
		if err != nil {
			t.Fatalf("native %s: Encode: %v", c.name, err)
		}
		erltest.WriteFile(t, filepath.Join(dir, "gonative"), c.name+".etf", enc)
		erltest.WriteFile(t, filepath.Join(dir, "gonative"), c.name+".erl", []byte(c.erlang))
		written++
	}

	// FormatFloat must print floats as the VM does.
	floats, err := Encode(floatSamples())
	if err != nil {
		t.Fatal(err)
	}
	erltest.WriteFile(t, dir, "floats.etf", floats)
	written++

	ok := erltest.Results(t, erltest.Escript(t, "testdata/erlang/check.escript", dir))
	if len(ok) != written {
		t.Errorf("Erlang confirmed %d of %d encodings", len(ok), written)
	}
}

type nativeCase struct {
	name   string
	term   Term
	erlang string // an Erlang expression (ending in ".") for the same term
}

func nativeCases() []nativeCase {
	// Keys deliberately out of order: Encode must sort small maps as the
	// VM does (integers, then floats, then atoms, tuples, ..., binaries).
	mixed := Map{
		{Binary("z"), int64(3)}, {Atom("b"), 1}, {Atom("a"), 2}, {1.0, Atom("x")},
		{int64(1), Atom("y")}, {Tuple{Atom("t")}, 4}, {String("l"), 5}, {Nil{}, 6},
		{-2, 7}, {big.NewInt(0).Lsh(big.NewInt(1), 70), 8}, {0.5, 9},
		{Map{}, 10}, {Bitstring{Bytes: []byte{0x80}, Bits: 1}, 11},
	}
	session := Map{
		{Atom("timeout_ms"), Atom("infinity")},
		{Atom("metadata"), Map{{Binary("user"), Binary("alice")}, {Binary("client"), Binary("claude")}}},
		{Atom("last_accessed"), int64(1700000005000)},
		{Atom("id"), Binary("séance-ü-日本")},
		{Atom("created_at"), int64(1700000000000)},
	}
	return []nativeCase{
		{"map_unsorted", mixed, `#{<<"z">> => 3, b => 1, a => 2, 1.0 => x, 1 => y, {t} => 4, "l" => 5, [] => 6, -2 => 7, (1 bsl 70) => 8, 0.5 => 9, #{} => 10, <<1:1>> => 11}.`},
		{"session_unsorted", session, `#{id => <<"séance-ü-日本"/utf8>>, created_at => 1700000000000, last_accessed => 1700000005000, timeout_ms => infinity, metadata => #{<<"user">> => <<"alice">>, <<"client">> => <<"claude">>}}.`},
		{"list_of_bytes", List{Elems: []Term{1, int64(2), uint8(3)}}, `[1,2,3].`},
		{"list_list_tail", List{Elems: []Term{int64(1)}, Tail: List{Elems: []Term{int64(2)}, Tail: String("ab")}}, `[1,2,97,98].`},
		{"list_improper", List{Elems: []Term{int64(1), int64(2)}, Tail: int64(3)}, `[1,2|3].`},
		{"list_empty", List{}, `[].`},
		{"string_empty", String(""), `[].`},
		{"string_70000", String(strings.Repeat("a", 70000)), `lists:duplicate(70000, $a).`},
		{"go_ints", Tuple{int8(-3), uint16(300), int(1 << 40), uint64(1 << 63), big.NewInt(42)}, `{-3, 300, 1 bsl 40, 1 bsl 63, 42}.`},
		{"bools", Tuple{true, false}, `{true, false}.`},
		{"bitstring_dirty_bits", Bitstring{Bytes: []byte{0xFF}, Bits: 3}, `<<7:3>>.`},
		{"bitstring_8", Bitstring{Bytes: []byte{1, 2}, Bits: 8}, `<<1,2>>.`},
		{"atoms", Tuple{Atom("é"), Atom("日本"), Atom(""), Atom("with space")}, `{'é', '日本', '', 'with space'}.`},
		{"floats", Tuple{0.1, 1.0e300, float32(0.5), 5e-324}, `{0.1, 1.0e300, 0.5, 5.0e-324}.`},
		{"tuple_300", make300(), `list_to_tuple(lists:duplicate(300, a)).`},
		{"export", Export{Module: "erlang", Function: "node", Arity: 0}, `fun erlang:node/0.`},
		{"nested_maps", Map{{Atom("b"), Map{{Atom("y"), 1}, {Atom("x"), 2}}}, {Atom("a"), Nil{}}}, `#{a => [], b => #{x => 2, y => 1}}.`},
	}
}

// floatSamples pairs floats of every magnitude with FormatFloat's text.
func floatSamples() List {
	r := rand.New(rand.NewPCG(7, 7))
	fs := []float64{0.1, 1.0e300, 5e-324, math.MaxFloat64, 1 << 53, 1<<53 - 2, 1e15, 1e16, 1e21, 1e22, 123456789.0, 0.0001, 0.00001}
	for range 3000 {
		var f float64
		switch r.IntN(3) {
		case 0: // any bit pattern
			f = math.Float64frombits(r.Uint64())
		case 1: // "round" decimals, where plain/exponent choices are made
			f = float64(r.IntN(100000)) * math.Pow10(r.IntN(44)-22)
		default: // integers around 2^53
			f = float64(int64(1<<53) + r.Int64N(1<<20) - 1<<19)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		if r.IntN(2) == 0 {
			f = -f
		}
		fs = append(fs, f)
	}
	var l List
	for _, f := range fs {
		l.Elems = append(l.Elems, Tuple{f, Binary(FormatFloat(f))})
	}
	return l
}

func make300() Tuple {
	t := make(Tuple, 300)
	for i := range t {
		t[i] = Atom("a")
	}
	return t
}

func firstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := range n {
		if got[i] != want[i] {
			return "first difference at byte " + itoa(i) + ": got " + itoa(int(got[i])) + ", want " + itoa(int(want[i]))
		}
	}
	return "lengths " + itoa(len(got)) + " and " + itoa(len(want))
}

func itoa(i int) string { return Format(int64(i)) }
