package term

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"runtime"
	"strings"
	"testing"
)

// blob prefixes the version byte; the tables below read better without it.
func blob(b ...byte) []byte { return append([]byte{131}, b...) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// atomExt is the ATOM_EXT encoding of an ASCII atom.
func atomExt(s string) []byte { return cat([]byte{100, 0, byte(len(s))}, []byte(s)) }

func bigFromString(s string) *big.Int {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return v
}

func TestDecodeTags(t *testing.T) {
	node := atomExt("a@h")
	tests := []struct {
		name string
		in   []byte
		want Term
	}{
		{"SMALL_INTEGER", blob(97, 200), int64(200)},
		{"INTEGER negative", blob(98, 0xFF, 0xFF, 0xFF, 0xFE), int64(-2)},
		{"INTEGER non-canonical small", blob(98, 0, 0, 0, 5), int64(5)},
		{"SMALL_BIG 2^64", blob(110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), bigFromString("18446744073709551616")},
		{"SMALL_BIG fits int64", blob(110, 5, 1, 0, 0, 0, 0, 1), -int64(1 << 32)},
		{"SMALL_BIG MinInt64", blob(110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0x80), int64(math.MinInt64)},
		{"SMALL_BIG MaxInt64+1", blob(110, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x80), bigFromString("9223372036854775808")},
		{"SMALL_BIG zero digits", blob(110, 0, 0), int64(0)},
		{"SMALL_BIG any non-zero sign is negative", blob(110, 1, 255, 5), int64(-5)},
		{"FLOAT_EXT underflow", cat(blob(99), []byte("1.0e-400"), make([]byte, 23)), 0.0},
		{"SMALL_BIG leading zero digits", blob(110, 3, 0, 7, 0, 0), int64(7)},
		{"LARGE_BIG", cat(blob(111), be32(2), []byte{1, 0x34, 0x12}), int64(-0x1234)},
		{"NEW_FLOAT", blob(70, 0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A), 0.1},
		{"NEW_FLOAT -0.0", blob(70, 0x80, 0, 0, 0, 0, 0, 0, 0), math.Copysign(0, -1)},
		{"FLOAT_EXT", cat(blob(99), []byte("1.50000000000000000000e+00"), make([]byte, 5)), 1.5},
		{"FLOAT_EXT sign and E", cat(blob(99), []byte("-2.5E3"), make([]byte, 25)), -2500.0},
		{"ATOM_EXT", blob(atomExt("abc")...), Atom("abc")},
		{"ATOM_EXT latin1", blob(100, 0, 2, 233, 97), Atom("éa")},
		{"SMALL_ATOM_EXT", blob(115, 2, 'o', 'k'), Atom("ok")},
		{"SMALL_ATOM_UTF8", blob(119, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC), Atom("日本")},
		{"ATOM_UTF8", blob(118, 0, 2, 0xC3, 0xA9), Atom("é")},
		{"ATOM empty", blob(100, 0, 0), Atom("")},
		{"SMALL_TUPLE", blob(104, 2, 97, 1, 106), Tuple{int64(1), Nil{}}},
		{"SMALL_TUPLE empty", blob(104, 0), Tuple{}},
		{"LARGE_TUPLE", cat(blob(105), be32(1), []byte{97, 9}), Tuple{int64(9)}},
		{"NIL", blob(106), Nil{}},
		{"STRING", blob(107, 0, 3, 'a', 'b', 'c'), String("abc")},
		{"STRING empty is []", blob(107, 0, 0), Nil{}},
		{"LIST proper", cat(blob(108), be32(2), []byte{97, 1, 98, 0, 0, 1, 0, 106}), List{Elems: []Term{int64(1), int64(256)}}},
		{"LIST improper", cat(blob(108), be32(2), []byte{97, 1, 97, 2, 97, 3}), List{Elems: []Term{int64(1), int64(2)}, Tail: int64(3)}},
		{"LIST list tail flattened", cat(blob(108), be32(1), []byte{97, 1, 108}, be32(1), []byte{97, 2, 106}), List{Elems: []Term{int64(1), int64(2)}}},
		{"LIST string tail flattened", cat(blob(108), be32(1), []byte{97, 1, 107, 0, 2, 3, 4}), List{Elems: []Term{int64(1), int64(3), int64(4)}}},
		{"LIST zero length is its tail", cat(blob(108), be32(0), []byte{97, 1}), int64(1)},
		{"BINARY", cat(blob(109), be32(3), []byte{1, 2, 3}), Binary{1, 2, 3}},
		{"BINARY empty", cat(blob(109), be32(0)), Binary{}},
		{"BIT_BINARY", cat(blob(77), be32(2), []byte{3, 1, 0xE0}), Bitstring{Bytes: []byte{1, 0xE0}, Bits: 3}},
		{"BIT_BINARY dirty bits masked", cat(blob(77), be32(1), []byte{3, 0xFF}), Bitstring{Bytes: []byte{0xE0}, Bits: 3}},
		{"BIT_BINARY 8 bits is a binary", cat(blob(77), be32(1), []byte{8, 0xFF}), Binary{0xFF}},
		{"BIT_BINARY empty", cat(blob(77), be32(0), []byte{0}), Binary{}},
		{"MAP", cat(blob(116), be32(2), atomExt("a"), []byte{97, 1}, []byte{109}, be32(1), []byte{'k', 106}), Map{{Atom("a"), int64(1)}, {Binary("k"), Nil{}}}},
		{"MAP empty", cat(blob(116), be32(0)), Map{}},
		{"NEW_PID", cat(blob(88), node, be32(1), be32(2), be32(3)), Pid{Node: "a@h", ID: 1, Serial: 2, Creation: 3}},
		{"PID old", cat(blob(103), node, be32(1), be32(2), []byte{3}), Pid{Node: "a@h", ID: 1, Serial: 2, Creation: 3}},
		{"NEWER_REFERENCE", cat(blob(90, 0, 2), node, be32(7), be32(1), be32(2)), Ref{Node: "a@h", Creation: 7, ID: []uint32{1, 2}}},
		{"NEW_REFERENCE", cat(blob(114, 0, 1), node, []byte{7}, be32(1)), Ref{Node: "a@h", Creation: 7, ID: []uint32{1}}},
		{"REFERENCE old", cat(blob(101), node, be32(1), []byte{7}), Ref{Node: "a@h", Creation: 7, ID: []uint32{1}}},
		{"NEW_PORT", cat(blob(89), node, be32(5), be32(7)), Port{Node: "a@h", ID: 5, Creation: 7}},
		{"PORT old", cat(blob(102), node, be32(5), []byte{7}), Port{Node: "a@h", ID: 5, Creation: 7}},
		{"V4_PORT", cat(blob(120), node, be32(1), be32(2), be32(7)), Port{Node: "a@h", ID: 1<<32 | 2, Creation: 7}},
		{"EXPORT", cat(blob(113), atomExt("m"), atomExt("f"), []byte{97, 2}), Export{Module: "m", Function: "f", Arity: 2}},
		{"EXPORT INTEGER arity", cat(blob(113), atomExt("m"), atomExt("f"), []byte{98, 0, 0, 0, 1}), Export{Module: "m", Function: "f", Arity: 1}},
		{"NEW_FUN", cat(blob(112), newFunBody(0)), Opaque{Tag: 112, Raw: newFunBody(0)}},
		{"NEW_FUN free vars", cat(blob(112), newFunBody(2)), Opaque{Tag: 112, Raw: newFunBody(2)}},
		{"COMPRESSED", compress(cat([]byte{109}, be32(4), []byte("abcd"))), Binary("abcd")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.in)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !Equal(got, tc.want) || !sameShape(got, tc.want) {
				t.Fatalf("Decode = %#v (%s), want %#v (%s)", got, Format(got), tc.want, Format(tc.want))
			}
		})
	}
}

// sameShape checks what Equal deliberately ignores: the Go type and, for
// floats, the sign of zero.
func sameShape(a, b Term) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case *big.Int:
		_, ok := b.(*big.Int)
		return ok
	}
	return typeName(a) == typeName(b)
}

// newFunBody builds a well-formed NEW_FUN_EXT body (everything after the
// tag) with n free variables.
func newFunBody(n int) []byte {
	var rest []byte
	rest = append(rest, 1)                   // arity
	rest = append(rest, make([]byte, 16)...) // uniq
	rest = append(rest, be32(3)...)          // index
	rest = append(rest, be32(uint32(n))...)  // num free
	rest = append(rest, atomExt("mod")...)   // module
	rest = append(rest, 97, 3)               // old index
	rest = append(rest, 98, 0, 0, 0, 9)      // old uniq
	rest = append(rest, 88)                  // pid
	rest = append(rest, atomExt("a@h")...)   //
	rest = append(rest, make([]byte, 12)...) //
	for i := range n {
		rest = append(rest, 97, byte(i))
	}
	return cat(be32(uint32(4+len(rest))), rest)
}

func compress(payload []byte) []byte {
	var zb bytes.Buffer
	w := zlib.NewWriter(&zb)
	w.Write(payload)
	w.Close()
	return cat(blob(80), be32(uint32(len(payload))), zb.Bytes())
}

func TestDecodeErrors(t *testing.T) {
	deep := func(n int, open []byte, close []byte) []byte {
		b := []byte{131}
		for range n {
			b = append(b, open...)
		}
		b = append(b, 106)
		for range n {
			b = append(b, close...)
		}
		return b
	}
	tests := []struct {
		name   string
		in     []byte
		offset int
		reason string
	}{
		{"empty", nil, 0, "empty input"},
		{"version", []byte{130, 97, 1}, 0, "version byte is 130"},
		{"only version", []byte{131}, 1, "no term after the version byte"},
		{"unknown tag", blob(1), 1, "unknown tag 1"},
		{"atom cache ref", blob(82, 0), 1, "ATOM_CACHE_REF"},
		{"obsolete fun", blob(117), 1, "FUN_EXT"},
		{"local ext", blob(121), 1, "LOCAL_EXT"},
		{"nested compressed", blob(104, 1, 80), 3, "COMPRESSED is only allowed"},
		{"trailing bytes", blob(97, 1, 0), 3, "1 trailing bytes"},
		{"truncated SMALL_INTEGER", blob(97), 2, "SMALL_INTEGER_EXT: need 1 bytes, only 0 left"},
		{"truncated INTEGER", blob(98, 0, 0), 2, "INTEGER_EXT: need 4 bytes"},
		{"truncated float", blob(70, 1, 2), 2, "NEW_FLOAT_EXT"},
		{"NaN", blob(70, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0), 2, "NaN or infinite"},
		{"infinity", blob(70, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0), 2, "NaN or infinite"},
		{"FLOAT_EXT garbage", cat(blob(99), []byte("1.5x"), make([]byte, 27)), 2, "not a float"},
		{"FLOAT_EXT no point", cat(blob(99), []byte("15"), make([]byte, 29)), 2, "not a float"},
		{"FLOAT_EXT overflow", cat(blob(99), []byte("1.0e999"), make([]byte, 24)), 2, "out of range"},
		{"binary length beyond input", cat(blob(109), be32(0xFFFFFFFF), []byte{1}), 2, "BINARY_EXT length 4294967295 exceeds the 1 bytes left"},
		{"list length beyond input", cat(blob(108), be32(0x7FFFFFFF)), 2, "LIST_EXT length 2147483647 exceeds"},
		{"map length beyond input", cat(blob(116), be32(3), []byte{97, 1, 97, 2}), 2, "MAP_EXT length 3 exceeds"},
		{"tuple arity beyond input", cat(blob(105), be32(1000)), 2, "tuple arity length 1000 exceeds"},
		{"string beyond input", blob(107, 0, 9, 1), 2, "STRING_EXT length 9 exceeds"},
		{"big beyond input", cat(blob(111), be32(1<<30), []byte{0}), 2, "big integer length 1073741824 exceeds"},
		{"atom beyond input", blob(100, 0, 5, 'a'), 2, "atom length 5 exceeds"},
		{"atom invalid utf8", blob(119, 2, 0xFF, 0xFE), 1, "invalid UTF-8"},
		{"atom too long", cat(blob(118, 1, 0), bytes.Repeat([]byte("a"), 256)), 1, "256 characters"},
		{"latin1 atom too long", cat(blob(100, 1, 0), bytes.Repeat([]byte("a"), 256)), 1, "256 characters"},
		{"bitstring bad bits", cat(blob(77), be32(1), []byte{9, 0}), 6, "cannot use 9 bits"},
		{"bitstring zero bits", cat(blob(77), be32(1), []byte{0, 0}), 6, "cannot use 0 bits"},
		{"empty bitstring with bits", cat(blob(77), be32(0), []byte{3}), 6, "cannot use 3 bits"},
		{"too many ref words", cat(blob(90, 0, 6), atomExt("a"), make([]byte, 28)), 2, "6 ID words"},
		{"pid node not an atom", cat(blob(88, 97, 1), make([]byte, 12)), 2, "expected an atom"},
		{"export arity", cat(blob(113), atomExt("m"), atomExt("f"), []byte{98, 0, 0, 1, 0}), 10, "arity must be an integer 0..255"},
		{"duplicate map key", cat(blob(116), be32(2), []byte{97, 1, 97, 1, 97, 1, 97, 2}), 1, "key 1 twice"},
		{"new fun size lies", cat(blob(112), be32(10), make([]byte, 6)), 2, "smaller than its fixed fields"},
		{"new fun size mismatch", cat(blob(112), newFunBodySize(+2)), 2, "does not match its contents"},
		{"deep tuples", deep(MaxDepth+1, []byte{104, 1}, nil), 1 + 2*MaxDepth, "nested deeper than 10000"},
		{"deep lists", deep(MaxDepth+1, cat([]byte{108}, be32(1)), []byte{106}), 1 + 5*MaxDepth, "nested deeper than 10000"},
		{"compressed truncated size", blob(80, 0, 0), 2, "truncated uncompressed-size"},
		{"compressed absurd size", cat(blob(80), be32(1<<31), []byte{1, 2, 3}), 2, "exceeds the limit"},
		{"compressed impossible ratio", cat(blob(80), be32(1<<20), []byte{1, 2, 3}), 2, "impossible for 3 compressed bytes"},
		{"compressed garbage", cat(blob(80), be32(4), []byte{1, 2, 3, 4}), 6, "zlib"},
		{"compressed size mismatch", sizeLie(), 2, "inflates to 6 bytes, header says 7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.in)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %v, %v; want a *DecodeError", Format(got), err)
			}
			if de.Offset != tc.offset || !strings.Contains(de.Reason, tc.reason) {
				t.Fatalf("error %q at offset %d; want %q at offset %d", de.Reason, de.Offset, tc.reason, tc.offset)
			}
		})
	}
}

func newFunBodySize(delta int) []byte {
	b := newFunBody(0)
	binary.BigEndian.PutUint32(b, uint32(len(b)+delta))
	return append(b, make([]byte, delta)...)
}

func sizeLie() []byte {
	b := compress(cat([]byte{109}, be32(1), []byte{1}))
	binary.BigEndian.PutUint32(b[2:], 7)
	return b
}

func TestDecodeDepthLimit(t *testing.T) {
	// Exactly MaxDepth levels is fine; the limit is on the level after.
	b := []byte{131}
	for range MaxDepth {
		b = append(b, 104, 1)
	}
	b = append(b, 106)
	if _, err := Decode(b); err != nil {
		t.Fatalf("MaxDepth levels: %v", err)
	}
	if _, err := (DecodeOptions{MaxDepth: 3}).Decode(b); err == nil {
		t.Fatal("MaxDepth option ignored")
	}
}

func TestDecodeErrorInCompressedPayload(t *testing.T) {
	_, err := Decode(compress([]byte{104, 2, 97, 1}))
	var de *DecodeError
	if !errors.As(err, &de) || !de.InCompressed || de.Offset != 4 {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "decompressed payload") {
		t.Fatalf("message does not say where: %v", err)
	}
}

func TestDecodeCopiesUnlessNoCopy(t *testing.T) {
	in := cat(blob(109), be32(3), []byte("abc"))
	x, _ := Decode(in)
	y, _ := DecodeOptions{NoCopy: true}.Decode(in)
	in[6] = 'X'
	if string(x.(Binary)) != "abc" {
		t.Errorf("Decode aliased its input: %q", x)
	}
	if string(y.(Binary)) != "Xbc" {
		t.Errorf("NoCopy copied: %q", y)
	}
}

func TestDecodeValue(t *testing.T) {
	x, err := DecodeValue([]byte{97, 7})
	if err != nil || x != int64(7) {
		t.Fatalf("DecodeValue = %v, %v", x, err)
	}
	if _, err := DecodeValue([]byte{97, 7, 0}); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

// Forged length fields must not make Decode allocate more than a small
// multiple of the input, even when thousands of nested headers each claim
// the rest of the input.
func TestDecodeNestedLiesStayCheap(t *testing.T) {
	const levels = 9000
	for _, hdr := range []struct {
		name string
		make func(claim uint32) []byte
		per  uint32 // input bytes each claimed element needs at least
	}{
		{"lists", func(c uint32) []byte { return cat([]byte{108}, be32(c)) }, 1},
		{"tuples", func(c uint32) []byte { return cat([]byte{105}, be32(c)) }, 1},
		{"maps", func(c uint32) []byte { return cat([]byte{116}, be32(c)) }, 2},
	} {
		total := 1 + levels*5 + 1
		b := []byte{131}
		for range levels {
			left := uint32(total - len(b) - 5)
			b = append(b, hdr.make(left/hdr.per)...)
		}
		b = append(b, 0) // tag 0: the decoder fails here, at the bottom
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Decode(b)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: forged input decoded", hdr.name)
		}
		// Linear in the input; unbudgeted preallocation would be ~3 GB here.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(len(b)) {
			t.Errorf("%s: %d bytes allocated for a %d-byte input", hdr.name, alloc, len(b))
		}
	}
}

// A chain of LIST_EXTs, each the tail of the previous one, is one flat
// list: it decodes in linear time and does not count as nesting.
func TestDecodeListChain(t *testing.T) {
	const links = 3 * MaxDepth
	b := []byte{131}
	for i := range links {
		b = append(b, cat([]byte{108}, be32(1), []byte{97, byte(i)})...)
	}
	b = append(b, 106)
	x, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := x.(List)
	if !ok || len(l.Elems) != links || l.Tail != nil || l.Elems[links-1] != int64((links-1)%256) {
		t.Fatalf("got %s", Format(x))
	}
	enc, _ := Encode(x)
	if len(enc) != 1+3+links {
		t.Errorf("re-encoded as %d bytes, want one STRING_EXT", len(enc))
	}
}
