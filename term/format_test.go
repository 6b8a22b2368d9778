package term

import (
	"math"
	"math/big"
	"strings"
	"testing"
)

func TestFormatFloatLikeErlang(t *testing.T) {
	// Pairs printed by io:format("~p", [F]) and float_to_list(F, [short])
	// on OTP 25.
	cases := map[float64]string{
		10.0: "10.0", 100.0: "100.0", 1000.0: "1.0e3", 10000.0: "1.0e4", 12000.0: "1.2e4",
		1.5e5: "1.5e5", 120.0: "120.0", 0.01: "0.01", 0.001: "0.001", 0.0001: "0.0001",
		0.00012: "1.2e-4", 0.000123: "1.23e-4", 1.0e-5: "1.0e-5", 1.2e-5: "1.2e-5",
		123.456: "123.456", 1.0e15: "1.0e15", 1.0e16: "1.0e16", 1.23e16: "1.23e16",
		5.0e-324: "5.0e-324", 1.7976931348623157e308: "1.7976931348623157e308", 0.1: "0.1",
		12345678901234567.0: "1.2345678901234568e16", 1.0e300: "1.0e300", 123456789.0: "123456789.0",
		-1.5: "-1.5", 0: "0.0", 1234567890123456.0: "1234567890123456.0",
		9007199254740990.0: "9007199254740990.0", 9007199254740992.0: "9.007199254740992e15",
		1.2e16: "1.2e16", 1.23456789e-4: "1.23456789e-4", 0.0012345678: "0.0012345678", math.Copysign(0, -1): "-0.0", 1.0: "1.0",
	}
	for f, want := range cases {
		if got := FormatFloat(f); got != want {
			t.Errorf("FormatFloat(%v) = %q, want %q", f, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	cases := []struct {
		in   Term
		want string
	}{
		{int64(-7), "-7"},
		{new(big.Int).Lsh(big.NewInt(1), 64), "18446744073709551616"},
		{Atom("ok"), "ok"},
		{Atom("Hello"), "'Hello'"},
		{Atom("with space"), "'with space'"},
		{Atom("it's"), `'it\'s'`},
		{Atom("end"), "'end'"},
		{Atom("node@host"), "node@host"},
		{Atom(""), "''"},
		{Binary("user"), `<<"user">>`},
		{Binary("séance-ü-日本"), `<<"séance-ü-日本"/utf8>>`},
		{Binary{0, 1, 255}, "<<0,1,255>>"},
		{Binary{}, "<<>>"},
		{Binary("a\"b\n"), `<<"a\"b\n">>`},
		{Bitstring{Bytes: []byte{1, 0xE0}, Bits: 3}, "<<1,7:3>>"},
		{Bitstring{Bytes: []byte{0x80}, Bits: 1}, "<<1:1>>"},
		{Tuple{Atom("a"), int64(1)}, "{a,1}"},
		{Nil{}, "[]"},
		{String("abc"), `"abc"`},
		{String{1, 2}, "[1,2]"},
		{List{Elems: []Term{int64(104), int64(105)}}, `"hi"`},
		{List{Elems: []Term{int64(1), int64(2)}, Tail: int64(3)}, "[1,2|3]"},
		{List{Elems: []Term{Atom("a"), 256}}, "[a,256]"},
		{Map{{Binary("k"), Atom("v")}, {Atom("n"), 1.5}}, `#{<<"k">> => v,n => 1.5}`},
		{Map{}, "#{}"},
		{Pid{Node: "nonode@nohost", ID: 85, Serial: 0}, "#Pid<nonode@nohost.85.0>"},
		{Ref{Node: "a@h", ID: []uint32{1, 2, 3}}, "#Ref<a@h.3.2.1>"},
		{Port{Node: "a@h", ID: 4}, "#Port<a@h.4>"},
		{Export{Module: "erlang", Function: "node", Arity: 0}, "fun erlang:node/0"},
		{Opaque{Tag: 112, Raw: newFunBody(0)}, "#Fun<mod.3>"},
		{Opaque{Tag: 112, Raw: []byte{1}}, "#Opaque<112:1 bytes>"},
		{nil, "<nil>"},
		{struct{}{}, "<unsupported struct {}>"},
	}
	for _, c := range cases {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%#v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestFormatTruncates(t *testing.T) {
	long := Binary(strings.Repeat("x", 1<<20))
	got := Format(long)
	want := `<<"` + strings.Repeat("x", 64) + `"...(1048576 bytes)>>`
	if got != want {
		t.Errorf("Format(1 MB) = %s", got)
	}
	// A cut must not split a UTF-8 sequence.
	utf := Binary(strings.Repeat("é", 40))
	if got := Format(utf); !strings.HasPrefix(got, `<<"`+strings.Repeat("é", 32)+`"/utf8...(80 bytes)`) {
		t.Errorf("Format(utf8) = %s", got)
	}
	list := make(Tuple, 100)
	for i := range list {
		list[i] = int64(i)
	}
	if got := (FormatOptions{MaxElems: 3}).Format(list); got != "{0,1,2,...(97 more)}" {
		t.Errorf("MaxElems: %s", got)
	}
	deep := Term(Nil{})
	for range 100 {
		deep = Tuple{deep}
	}
	if got := (FormatOptions{MaxDepth: 2}).Format(deep); got != "{{{...}}}" {
		t.Errorf("MaxDepth: %s", got)
	}
	if got := (FormatOptions{MaxBinary: -1}).Format(long); len(got) != 1<<20+6 {
		t.Errorf("unlimited MaxBinary cut the value (len %d)", len(got))
	}
}
