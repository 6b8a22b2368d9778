package term

import (
	"bytes"
	"math"
	"math/big"
	"testing"
)

// fuzzSeeds is a spread of valid encodings (every type, under each encoder
// option) and near-misses, so the fuzzer starts from interesting places.
func fuzzSeeds(tb testing.TB) [][]byte {
	terms := []Term{
		int64(0), int64(255), int64(-1), int64(math.MaxInt64), int64(math.MinInt64),
		new(big.Int).Lsh(big.NewInt(1), 64), new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 2100)),
		0.1, math.Copysign(0, -1), 1e300,
		Atom("ok"), Atom("é"), Atom("日本"), Binary("séance-ü-日本"), Binary{}, Bitstring{Bytes: []byte{1, 0xC0}, Bits: 2},
		Tuple{}, Tuple{Atom("a"), Tuple{Nil{}}}, Nil{}, String("abc"),
		List{Elems: []Term{int64(1), int64(2)}, Tail: int64(3)}, List{Elems: []Term{Atom("a"), 1.5}},
		Map{}, Map{{Atom("id"), Binary("x")}, {Binary("k"), Map{{Tuple{int64(1)}, Nil{}}}}},
		Pid{Node: "nonode@nohost", ID: 85}, Ref{Node: "a@b", Creation: 1, ID: []uint32{1, 2, 3}},
		Port{Node: "a@b", ID: 7}, Port{Node: "a@b", ID: 1 << 40}, Export{Module: "m", Function: "f", Arity: 2},
		Opaque{Tag: 112, Raw: newFunBody(2)},
	}
	var seeds [][]byte
	for _, opts := range []EncodeOptions{{}, {UTF8Atoms: true}, {TextFloats: true}} {
		for _, x := range terms {
			b, err := opts.Encode(x)
			if err != nil {
				tb.Fatal(err)
			}
			seeds = append(seeds, b)
		}
	}
	all, err := Encode(Tuple(terms))
	if err != nil {
		tb.Fatal(err)
	}
	seeds = append(seeds, all, compress(all[1:]), sessionLike(tb, Map{{Binary("user"), Binary("alice")}}))
	seeds = append(seeds,
		nil, []byte{131}, []byte{131, 80, 0, 0, 0, 1, 0},
		cat(blob(108), be32(0), []byte{108}, be32(1), []byte{97, 1, 106}),
		cat(blob(116), be32(2), []byte{97, 2, 106, 97, 1, 106}),
		cat(blob(103), atomExt("n"), make([]byte, 9)),
		cat(blob(99), []byte("1.5e3"), make([]byte, 26)),
		cat(blob(77), be32(1), []byte{3, 0xFF}),
	)
	return seeds
}

// FuzzDecode checks that Decode (and the skipping accessors) never panic
// on any input, and that whatever Decode accepts is encodable and stable:
// Encode(Decode(b)) decodes to an Equal term that re-encodes identically.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Decode(b)

		// The cheap accessors walk the same bytes and must be as robust.
		if len(b) > 0 {
			Skip(b[1:])
		}
		WalkMap(b, func(k, v []byte) bool {
			DecodeValue(k)
			DecodeValue(v)
			return true
		})
		LookupMapKeys(b, "id", "metadata")

		if err != nil {
			return
		}
		if len(b) > 1 && b[1] != tagCompressed {
			if n, err := Skip(b[1:]); err != nil || n != len(b)-1 {
				t.Fatalf("Decode accepted the input but Skip = %d, %v (want %d)", n, err, len(b)-1)
			}
		}
		_ = Format(x)
		if Compare(x, x) != 0 {
			t.Fatalf("term not equal to itself: %s", Format(x))
		}
		enc, err := Encode(x)
		if err != nil {
			t.Fatalf("decoded term does not encode: %v\n%s", err, Format(x))
		}
		y, err := Decode(enc)
		if err != nil {
			t.Fatalf("Encode output does not decode: %v", err)
		}
		if !Equal(x, y) {
			t.Fatalf("round trip changed the term:\n%s\n%s", Format(x), Format(y))
		}
		enc2, err := Encode(y)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable (%v)", err)
		}
	})
}
