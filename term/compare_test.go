package term

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestCompareOrder(t *testing.T) {
	// Ascending map-key order, as OTP 25 writes the keys of a small map
	// (observed with term_to_binary of a map holding all of them).
	node := Atom("nonode@nohost")
	ordered := []Term{
		new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 70)),
		int64(-2), int64(1), int64(2),
		new(big.Int).Lsh(big.NewInt(1), 70),
		-2.0, math.Copysign(0, -1), 0.0, 0.5, 1.0,
		Atom("a"), Atom("b"), Atom("é"),
		Ref{Node: node, ID: []uint32{5}}, Ref{Node: node, ID: []uint32{0, 1, 0}},
		Opaque{Tag: 112, Raw: []byte{1}}, Export{Module: "erlang", Function: "node"},
		Port{Node: node, ID: 1},
		Pid{Node: "b@h", ID: 1, Serial: 0}, Pid{Node: "a@h", ID: 300, Serial: 0}, Pid{Node: "a@h", ID: 1, Serial: 2},
		Tuple{}, Tuple{Atom("t")}, Tuple{int64(1), int64(2)},
		Map{}, Map{{Atom("a"), int64(1)}}, Map{{Atom("a"), int64(2)}}, Map{{Atom("b"), int64(0)}},
		Nil{},
		List{Elems: []Term{int64(1)}, Tail: int64(2)},
		List{Elems: []Term{int64(1), int64(2)}},
		String("a"), String("ab"), List{Elems: []Term{Atom("l")}},
		Binary{}, Binary{0}, Binary{1}, Binary{1, 0}, Bitstring{Bytes: []byte{0x80}, Bits: 1}, Binary{0x80, 0},
	}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := Compare(ordered[i], ordered[j]); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", Format(ordered[i]), Format(ordered[j]), got, want)
			}
		}
	}
}

func TestEqualAcrossRepresentations(t *testing.T) {
	pairs := [][2]Term{
		{String("ab"), List{Elems: []Term{int64(97), int64(98)}}},
		{Nil{}, List{}},
		{Nil{}, String("")},
		{int64(5), big.NewInt(5)},
		{int64(5), 5},
		{uint64(1 << 63), new(big.Int).Lsh(big.NewInt(1), 63)},
		{true, Atom("true")},
		{Map{{Atom("a"), 1}, {Atom("b"), 2}}, Map{{Atom("b"), 2}, {Atom("a"), 1}}},
		{List{Elems: []Term{int64(1)}, Tail: List{Elems: []Term{int64(2)}}}, List{Elems: []Term{int64(1), int64(2)}}},
		{Bitstring{Bytes: []byte{1}, Bits: 8}, Binary{1}},
		{Binary(nil), Binary{}},
	}
	for _, p := range pairs {
		if !Equal(p[0], p[1]) || !Equal(p[1], p[0]) {
			t.Errorf("%s and %s should be equal", Format(p[0]), Format(p[1]))
		}
	}
	notEqual := [][2]Term{
		{int64(1), 1.0},
		{0.0, math.Copysign(0, -1)},
		{Binary("a"), String("a")},
		{Atom("a"), Binary("a")},
		{Map{{Atom("a"), 1}}, Map{{Atom("a"), 2}}},
		{Tuple{}, Nil{}},
	}
	for _, p := range notEqual {
		if Equal(p[0], p[1]) {
			t.Errorf("%s and %s should differ", Format(p[0]), Format(p[1]))
		}
	}
}

func TestCompareForeignTypesDoNotPanic(t *testing.T) {
	for _, x := range []Term{struct{}{}, []int{1}, nil, "s", Bitstring{Bytes: []byte{1}, Bits: 200}} {
		_ = Compare(x, int64(1))
		_ = Compare(x, x)
	}
}

// Sorting random keys with Compare and encoding must give the same bytes
// whatever the input order: the map encoder's sort is total and stable.
func TestMapEncodingIndependentOfOrder(t *testing.T) {
	keys := []Term{int64(3), 2.5, Atom("x"), Binary("k"), Tuple{int64(1)}, String("s"), Nil{}, Map{}, int64(-9)}
	var m Map
	for i, k := range keys {
		m = append(m, MapPair{k, int64(i)})
	}
	want, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		got, _ := Encode(m)
		if string(got) != string(want) {
			t.Fatalf("encoding depends on pair order")
		}
	}
}

func TestMapGet(t *testing.T) {
	m := Map{{Binary("user"), Binary("a")}, {Atom("n"), int64(1)}}
	if v, ok := m.Get(Binary("user")); !ok || !Equal(v, Binary("a")) {
		t.Errorf("Get(<<\"user\">>) = %v, %v", v, ok)
	}
	if _, ok := m.Get(Atom("user")); ok {
		t.Error("atom key matched a binary key")
	}
	if v, ok := m.Get(1); ok || v != nil {
		t.Error("missing key found")
	}
}
