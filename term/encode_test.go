package term

import (
	"bytes"
	"math"
	"math/big"
	"strings"
	"testing"
)

// These expectations were taken from OTP 25's term_to_binary/1; the Erlang
// round-trip test checks the same ground against the live VM, these keep the
// rules pinned when erl is absent.
func TestEncodeBytes(t *testing.T) {
	tests := []struct {
		name string
		in   Term
		opts EncodeOptions
		want []byte
	}{
		{"small int", int64(255), EncodeOptions{}, blob(97, 255)},
		{"int32", 256, EncodeOptions{}, blob(98, 0, 0, 1, 0)},
		{"int32 min", math.MinInt32, EncodeOptions{}, blob(98, 0x80, 0, 0, 0)},
		{"beyond int32", int64(math.MaxInt32) + 1, EncodeOptions{}, blob(110, 4, 0, 0, 0, 0, 0x80)},
		{"MinInt64", int64(math.MinInt64), EncodeOptions{}, blob(110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0x80)},
		{"2^64", new(big.Int).Lsh(big.NewInt(1), 64), EncodeOptions{}, blob(110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)},
		{"big that fits", big.NewInt(-1), EncodeOptions{}, blob(98, 0xFF, 0xFF, 0xFF, 0xFF)},
		{"large big", new(big.Int).Lsh(big.NewInt(1), 2048), EncodeOptions{}, cat(blob(111), be32(257), []byte{0}, make([]byte, 256), []byte{1})},
		{"float", 0.1, EncodeOptions{}, blob(70, 0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A)},
		{"-0.0", math.Copysign(0, -1), EncodeOptions{}, blob(70, 0x80, 0, 0, 0, 0, 0, 0, 0)},
		{"text float", 1.5, EncodeOptions{TextFloats: true}, cat(blob(99), []byte("1.50000000000000000000e+00"), make([]byte, 5))},
		{"latin1 atom", Atom("é"), EncodeOptions{}, blob(100, 0, 1, 233)},
		{"utf8 atom", Atom("日"), EncodeOptions{}, blob(119, 3, 0xE6, 0x97, 0xA5)},
		{"latin1 atom, minor 2", Atom("é"), EncodeOptions{UTF8Atoms: true}, blob(119, 2, 0xC3, 0xA9)},
		{"long utf8 atom", Atom(strings.Repeat("ā", 128)), EncodeOptions{}, cat(blob(118, 1, 0), []byte(strings.Repeat("ā", 128)))},
		{"bool", true, EncodeOptions{}, blob(atomExt("true")...)},
		{"string", String("abc"), EncodeOptions{}, blob(107, 0, 3, 'a', 'b', 'c')},
		{"list of bytes is a string", List{Elems: []Term{int64(1), 2}}, EncodeOptions{}, blob(107, 0, 2, 1, 2)},
		{"improper", List{Elems: []Term{int64(1)}, Tail: int64(2)}, EncodeOptions{}, cat(blob(108), be32(1), []byte{97, 1, 97, 2})},
		{"list with big int", List{Elems: []Term{256}}, EncodeOptions{}, cat(blob(108), be32(1), []byte{98, 0, 0, 1, 0, 106})},
		{"empty list", List{}, EncodeOptions{}, blob(106)},
		{"bitstring", Bitstring{Bytes: []byte{0xFF}, Bits: 1}, EncodeOptions{}, cat(blob(77), be32(1), []byte{1, 0x80})},
		{"small map sorted", Map{{Atom("b"), 1}, {Atom("a"), 2}}, EncodeOptions{}, cat(blob(116), be32(2), atomExt("a"), []byte{97, 2}, atomExt("b"), []byte{97, 1})},
		{"pid", Pid{Node: "n", ID: 1, Serial: 2, Creation: 3}, EncodeOptions{}, cat(blob(88), atomExt("n"), be32(1), be32(2), be32(3))},
		{"ref", Ref{Node: "n", Creation: 3, ID: []uint32{1, 2, 3}}, EncodeOptions{}, cat(blob(90, 0, 3), atomExt("n"), be32(3), be32(1), be32(2), be32(3))},
		{"port", Port{Node: "n", ID: 5, Creation: 3}, EncodeOptions{}, cat(blob(89), atomExt("n"), be32(5), be32(3))},
		{"v4 port", Port{Node: "n", ID: 1 << 32, Creation: 3}, EncodeOptions{}, cat(blob(120), atomExt("n"), be32(1), be32(0), be32(3))},
		{"export", Export{Module: "m", Function: "f", Arity: 1}, EncodeOptions{}, cat(blob(113), atomExt("m"), atomExt("f"), []byte{97, 1})},
		{"opaque fun", Opaque{Tag: 112, Raw: newFunBody(1)}, EncodeOptions{}, cat(blob(112), newFunBody(1))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.opts.Encode(tc.in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Encode = %v\nwant     %v", got, tc.want)
			}
		})
	}
}

func TestEncodeStringBoundary(t *testing.T) {
	// term_to_binary uses STRING_EXT up to 65535 elements, LIST_EXT after.
	s, _ := Encode(String(bytes.Repeat([]byte{'x'}, 65535)))
	if s[1] != tagString {
		t.Errorf("65535 bytes: tag %d", s[1])
	}
	l, _ := Encode(String(bytes.Repeat([]byte{'x'}, 65536)))
	if l[1] != tagList || len(l) != 1+5+2*65536+1 {
		t.Errorf("65536 bytes: tag %d, len %d", l[1], len(l))
	}
	back, err := Decode(l)
	if err != nil || !Equal(back, String(bytes.Repeat([]byte{'x'}, 65536))) {
		t.Errorf("long string does not round trip: %v", err)
	}
}

func TestEncodeLargeMapKeepsOrder(t *testing.T) {
	var m Map
	for i := 40; i > 0; i-- {
		m = append(m, MapPair{int64(i), Nil{}})
	}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := Decode(b)
	if back.(Map)[0].Key != int64(40) {
		t.Errorf("a map over 32 keys was reordered")
	}
}

func TestEncodeErrors(t *testing.T) {
	cyclic := Tuple{nil}
	cyclic[0] = cyclic
	tests := []struct {
		name string
		in   Term
		want string
	}{
		{"nil", nil, "nil is not a term"},
		{"nil in tuple", Tuple{int64(1), nil}, "tuple element 2: nil is not a term"},
		{"nil big", (*big.Int)(nil), "nil is not a term"},
		{"NaN", math.NaN(), "no Erlang representation"},
		{"Inf", math.Inf(1), "no Erlang representation"},
		{"invalid atom", Atom("\xff"), "not valid UTF-8"},
		{"long atom", Atom(strings.Repeat("a", 256)), "256 characters"},
		{"go string", "text", "unsupported Go type string"},
		{"bad bitstring", Bitstring{Bytes: []byte{1}, Bits: 9}, "cannot use 9 bits"},
		{"empty bitstring with bits", Bitstring{Bits: 3}, "cannot use 3 bits"},
		{"opaque tag", Opaque{Tag: 1}, "only NEW_FUN_EXT"},
		{"ref words", Ref{ID: make([]uint32, 6)}, "6 ID words"},
		{"duplicate key", Map{{int64(1), Nil{}}, {1, Nil{}}}, "key 1 twice"},
		{"nested map error", Map{{Atom("k"), Tuple{nil}}}, "map value for k: tuple element 1"},
		{"cycle", cyclic, "nested deeper than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Encode(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEncodeAppend(t *testing.T) {
	out, err := EncodeOptions{}.Append([]byte("prefix"), int64(1))
	if err != nil || string(out) != "prefix\x83a\x01" {
		t.Fatalf("Append = %q, %v", out, err)
	}
	out, err = EncodeOptions{}.Append([]byte("prefix"), nil)
	if err == nil || string(out) != "prefix" {
		t.Fatalf("failed Append = %q, %v; want dst unchanged", out, err)
	}
}
