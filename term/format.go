package term

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// FormatOptions bounds what Format prints, so that a megabyte binary or a
// list of a million elements makes a readable line. Zero fields take the
// defaults noted; negative fields mean no limit.
type FormatOptions struct {
	// MaxBinary is how many bytes of a binary or string are shown
	// (default 64).
	MaxBinary int
	// MaxElems is how many elements of a list, tuple or map are shown
	// (default 32).
	MaxElems int
	// MaxDepth is how deeply nested terms are shown before "..."
	// (default 32).
	MaxDepth int
}

// Format renders t in Erlang syntax, truncating long values with the
// default FormatOptions. Pids, references, ports and closures, which have
// no literal syntax, are shown the way the shell shows them but with the
// node name, e.g. #Pid<nonode@nohost.85.0>.
func Format(t Term) string { return FormatOptions{}.Format(t) }

// Format is Format with these options.
func (o FormatOptions) Format(t Term) string {
	f := formatter{maxBin: pick(o.MaxBinary, 64), maxElems: pick(o.MaxElems, 32), maxDepth: pick(o.MaxDepth, 32)}
	f.term(t, 0)
	return f.sb.String()
}

func pick(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return math.MaxInt
	}
	return v
}

type formatter struct {
	sb                         strings.Builder
	maxBin, maxElems, maxDepth int
}

func (f *formatter) w(s string) { f.sb.WriteString(s) }

func (f *formatter) term(t Term, depth int) {
	if depth > f.maxDepth {
		f.w("...")
		return
	}
	switch v := normalize(t).(type) {
	case int64:
		f.w(strconv.FormatInt(v, 10))
	case *big.Int:
		if v == nil {
			f.w("<nil *big.Int>")
			return
		}
		f.w(v.String())
	case float64:
		f.w(FormatFloat(v))
	case Atom:
		f.w(quoteAtom(string(v)))
	case Binary:
		f.binary(v, 0)
	case Bitstring:
		bits := v.Bits
		if len(v.Bytes) == 0 || bits == 0 || bits >= 8 {
			f.binary(v.Bytes, 0)
			return
		}
		f.binary(v.Bytes, bits)
	case Tuple:
		f.w("{")
		f.seq(len(v), func(i int) { f.term(v[i], depth+1) })
		f.w("}")
	case Map:
		f.w("#{")
		f.seq(len(v), func(i int) {
			f.term(v[i].Key, depth+1)
			f.w(" => ")
			f.term(v[i].Value, depth+1)
		})
		f.w("}")
	case Nil:
		f.w("[]")
	case String:
		f.charlist(v, depth)
	case List:
		elems, tail := flattenList(v)
		if tail == nil && len(elems) > 0 {
			if s, ok := asBytes(elems); ok {
				f.charlist(s, depth)
				return
			}
		}
		f.w("[")
		f.seq(len(elems), func(i int) { f.term(elems[i], depth+1) })
		if tail != nil {
			f.w("|")
			f.term(tail, depth+1)
		}
		f.w("]")
	case Pid:
		fmt.Fprintf(&f.sb, "#Pid<%s.%d.%d>", quoteAtom(string(v.Node)), v.ID, v.Serial)
	case Ref:
		f.w("#Ref<" + quoteAtom(string(v.Node)))
		for i := len(v.ID) - 1; i >= 0; i-- { // most significant word first, like the shell
			fmt.Fprintf(&f.sb, ".%d", v.ID[i])
		}
		f.w(">")
	case Port:
		fmt.Fprintf(&f.sb, "#Port<%s.%d>", quoteAtom(string(v.Node)), v.ID)
	case Export:
		fmt.Fprintf(&f.sb, "fun %s:%s/%d", quoteAtom(string(v.Module)), quoteAtom(string(v.Function)), v.Arity)
	case Opaque:
		f.opaque(v)
	case nil:
		f.w("<nil>")
	default:
		fmt.Fprintf(&f.sb, "<unsupported %T>", t)
	}
}

// seq writes n comma-separated items, eliding those past maxElems.
func (f *formatter) seq(n int, item func(i int)) {
	for i := range n {
		if i > 0 {
			f.w(",")
		}
		if i == f.maxElems {
			fmt.Fprintf(&f.sb, "...(%d more)", n-i)
			return
		}
		item(i)
	}
}

// binary writes <<"text">> for printable UTF-8 and <<1,2,3>> otherwise;
// bits > 0 marks a bitstring whose last byte holds only that many bits.
func (f *formatter) binary(b []byte, bits uint8) {
	whole := b
	if bits > 0 {
		whole = b[:len(b)-1]
	}
	shown, cut := whole, false
	if len(shown) > f.maxBin {
		shown, cut = shown[:f.maxBin], true
		// Do not split a UTF-8 sequence when deciding printability.
		for i := 0; i < utf8.UTFMax-1 && len(shown) > 0 && !utf8.RuneStart(whole[len(shown)]); i++ {
			shown = shown[:len(shown)-1]
		}
	}
	f.w("<<")
	if bits == 0 && len(shown) > 0 && printableUTF8(shown) {
		f.w(quoteString(string(shown)))
		if !isASCII(shown) {
			f.w("/utf8")
		}
	} else {
		for i, c := range shown {
			if i > 0 {
				f.w(",")
			}
			f.w(strconv.Itoa(int(c)))
		}
	}
	if cut {
		fmt.Fprintf(&f.sb, "...(%d bytes)", len(whole))
	}
	if bits > 0 {
		if len(whole) > 0 || cut {
			f.w(",")
		}
		fmt.Fprintf(&f.sb, "%d:%d", b[len(b)-1]>>(8-bits), bits)
	}
	f.w(">>")
}

// charlist writes a byte list as "text" when printable, as Erlang's ~p
// does, and as [1,2,3] otherwise.
func (f *formatter) charlist(s String, depth int) {
	shown, cut := s, false
	if len(shown) > f.maxBin {
		shown, cut = shown[:f.maxBin], true
	}
	printable := true
	for _, c := range shown {
		if !printableLatin1(c) {
			printable = false
			break
		}
	}
	if !printable {
		f.w("[")
		f.seq(len(s), func(i int) { f.w(strconv.Itoa(int(s[i]))) })
		f.w("]")
		return
	}
	var runes strings.Builder
	for _, c := range shown {
		runes.WriteRune(rune(c))
	}
	f.w(quoteString(runes.String()))
	if cut {
		fmt.Fprintf(&f.sb, "...(%d chars)", len(s))
	}
}

func (f *formatter) opaque(v Opaque) {
	// NEW_FUN_EXT: Size(4) Arity(1) Uniq(16) Index(4) NumFree(4) Module ...
	if v.Tag == tagNewFun && len(v.Raw) > 29 {
		d := &decoder{b: v.Raw, maxDepth: 1, noCopy: true}
		if mod, _, err := d.atomAt(29, "module"); err == nil {
			fmt.Fprintf(&f.sb, "#Fun<%s.%d>", quoteAtom(string(mod)), binary.BigEndian.Uint32(v.Raw[21:25]))
			return
		}
	}
	fmt.Fprintf(&f.sb, "#Opaque<%d:%d bytes>", v.Tag, len(v.Raw))
}

func printableUTF8(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !strings.ContainsRune("\n\r\t\v\b\f\x1b", r) {
			return false
		}
	}
	return true
}

func printableLatin1(c byte) bool {
	return (c >= 32 && c <= 126) || c >= 160 || strings.IndexByte("\n\r\t\v\b\f\x1b", c) >= 0
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// quoteString writes s as an Erlang string literal.
func quoteString(s string) string { return quote(s, '"') }

func quote(s string, q rune) string {
	var sb strings.Builder
	sb.WriteRune(q)
	for _, r := range s {
		switch r {
		case q, '\\':
			sb.WriteRune('\\')
			sb.WriteRune(r)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		case '\v':
			sb.WriteString(`\v`)
		case '\b':
			sb.WriteString(`\b`)
		case '\f':
			sb.WriteString(`\f`)
		case '\x1b':
			sb.WriteString(`\e`)
		default:
			if r < 32 || r == 127 {
				fmt.Fprintf(&sb, `\x{%X}`, r)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteRune(q)
	return sb.String()
}

var reservedWords = map[string]bool{
	"after": true, "and": true, "andalso": true, "band": true, "begin": true, "bnot": true,
	"bor": true, "bsl": true, "bsr": true, "bxor": true, "case": true, "catch": true,
	"cond": true, "div": true, "else": true, "end": true, "fun": true, "if": true,
	"let": true, "maybe": true, "not": true, "of": true, "or": true, "orelse": true,
	"receive": true, "rem": true, "try": true, "when": true, "xor": true,
}

// quoteAtom writes an atom bare when Erlang would, quoted otherwise.
func quoteAtom(s string) string {
	bare := s != "" && s[0] >= 'a' && s[0] <= 'z' && !reservedWords[s]
	for i := 0; bare && i < len(s); i++ {
		c := s[i]
		bare = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '@'
	}
	if bare {
		return s
	}
	return quote(s, '\'')
}

// FormatFloat renders f as Erlang's ~p does (float_to_list(F, [short])):
// the shortest digits that read back as f, in plain notation unless the
// exponent form is shorter, e.g. 0.1, 120.0, 1.0e3, 1.2e-4, 1.0e300.
func FormatFloat(f float64) string {
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// "d.ddde±x": shortest round-trip digits and a decimal exponent.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	// From 2^53 on, where floats stop holding every integer, the VM always
	// uses the exponent form (9007199254740990.0 but 9.007199254740992e15).
	if f >= 1<<53 {
		return sign + insertExp(digits, strconv.Itoa(x))
	}
	return sign + insertDecimal(x+1, digits)
}

func insertExp(s, expL string) string {
	if len(s) == 1 {
		return s + ".0e" + expL
	}
	return s[:1] + "." + s[1:] + "e" + expL
}

// insertDecimal chooses between plain and exponent notation the way the
// VM does: place is where the decimal point goes relative to the digits s,
// and plain notation wins when its padding zeros cost no more than the
// exponent would.
func insertDecimal(place int, s string) string {
	l := len(s)
	if place == 0 {
		return "0." + s
	}
	if place > 0 && place < l {
		return s[:place] + "." + s[place:]
	}
	expL := strconv.Itoa(place - 1)
	expDot := 1
	if l == 1 {
		expDot = 2
	}
	expCost := len(expL) + 1 + expDot
	if place < 0 {
		if 2-place <= expCost {
			return "0." + strings.Repeat("0", -place) + s
		}
		return insertExp(s, expL)
	}
	if place-l+2 <= expCost {
		return s + strings.Repeat("0", place-l) + ".0"
	}
	return insertExp(s, expL)
}
