package term

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
)

// Equal reports whether a and b are the same Erlang term, in the sense of
// =:=. Representation differences that do not exist in Erlang are ignored:
// String versus List of small integers, Nil versus an empty List, int64
// versus *big.Int (or any Go integer type), and the pair order of maps. It
// is stricter than OTP 25 in one corner: 0.0 and -0.0 differ (as they do
// from OTP 27 on), so that Equal terms always encode to the same bytes.
func Equal(a, b Term) bool { return Compare(a, b) == 0 }

// Compare orders terms the way the VM orders map keys: Erlang's standard
// term order (number < atom < reference < fun < port < pid < tuple < map <
// [] < list < bitstring) except that every integer sorts before every
// float, so 1 and 1.0 are distinct. term_to_binary writes small maps in
// this order. Pids, ports and references from other nodes are ordered as
// OTP 25 orders them (checked against the VM); closures (Opaque) are
// ordered by their encoded bytes, which only approximates the VM.
//
// Values of types outside the model compare after everything else, by
// their Go type name, so Compare never panics.
func Compare(a, b Term) int {
	// Fast paths for the usual map keys; decoding checks every map's key
	// order, so this is on the hot path.
	switch x := a.(type) {
	case Binary:
		if y, ok := b.(Binary); ok {
			return bytes.Compare(x, y)
		}
	case Atom:
		if y, ok := b.(Atom); ok {
			return strings.Compare(string(x), string(y))
		}
	case int64:
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
	}
	a, b = normalize(a), normalize(b)
	ca, cb := class(a), class(b)
	if ca != cb {
		return cmp.Compare(ca, cb)
	}
	switch ca {
	case classInt:
		return compareInts(a, b)
	case classFloat:
		x, y := a.(float64), b.(float64)
		if c := cmp.Compare(x, y); c != 0 {
			return c
		}
		// Only ±0 can be equal here; order -0.0 first.
		return cmp.Compare(math.Float64bits(y)>>63, math.Float64bits(x)>>63)
	case classAtom:
		return strings.Compare(string(a.(Atom)), string(b.(Atom)))
	case classRef:
		x, y := a.(Ref), b.(Ref)
		if c := strings.Compare(string(x.Node), string(y.Node)); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Creation, y.Creation); c != 0 {
			return c
		}
		return compareRefIDs(x.ID, y.ID)
	case classFun:
		return compareFuns(a, b)
	case classPort:
		x, y := a.(Port), b.(Port)
		if c := strings.Compare(string(x.Node), string(y.Node)); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Creation, y.Creation); c != 0 {
			return c
		}
		return cmp.Compare(x.ID, y.ID)
	case classPid:
		x, y := a.(Pid), b.(Pid)
		if c := cmp.Compare(x.Serial, y.Serial); c != 0 {
			return c
		}
		if c := cmp.Compare(x.ID, y.ID); c != 0 {
			return c
		}
		if c := strings.Compare(string(x.Node), string(y.Node)); c != 0 {
			return c
		}
		return cmp.Compare(x.Creation, y.Creation)
	case classTuple:
		x, y := a.(Tuple), b.(Tuple)
		if c := cmp.Compare(len(x), len(y)); c != 0 {
			return c
		}
		for i := range x {
			if c := Compare(x[i], y[i]); c != 0 {
				return c
			}
		}
		return 0
	case classMap:
		return compareMaps(a.(Map), b.(Map))
	case classNil:
		return 0
	case classList:
		return compareLists(a, b)
	case classBits:
		return compareBits(a, b)
	}
	// Foreign types: some order, never a panic.
	return strings.Compare(typeName(a), typeName(b))
}

const (
	classInt = iota
	classFloat
	classAtom
	classRef
	classFun
	classPort
	classPid
	classTuple
	classMap
	classNil
	classList
	classBits
	classForeign
)

func class(t Term) int {
	switch v := t.(type) {
	case int64, *big.Int:
		return classInt
	case float64:
		return classFloat
	case Atom:
		return classAtom
	case Ref:
		return classRef
	case Export, Opaque:
		return classFun
	case Port:
		return classPort
	case Pid:
		return classPid
	case Tuple:
		return classTuple
	case Map:
		return classMap
	case Nil:
		return classNil
	case String:
		if len(v) == 0 {
			return classNil
		}
		return classList
	case List:
		if len(v.Elems) == 0 {
			// A List without elements is its tail.
			if v.Tail == nil {
				return classNil
			}
			return class(normalize(v.Tail))
		}
		return classList
	case Binary, Bitstring:
		return classBits
	}
	return classForeign
}

// normalize maps the Go conveniences Encode accepts (plain int types,
// float32, bool, a nil *big.Int is left alone) onto the model's types, and
// unwraps a List without elements to its tail.
func normalize(t Term) Term {
	switch v := t.(type) {
	case int64, float64, Atom, Binary, Tuple, Map, String, Nil, Pid, Ref, Port, Bitstring:
		return t
	case int:
		return int64(v)
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case uint:
		return normUint(uint64(v))
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case uint64:
		return normUint(v)
	case *big.Int:
		if v != nil && v.IsInt64() {
			return v.Int64()
		}
		return t
	case float32:
		return float64(v)
	case bool:
		if v {
			return Atom("true")
		}
		return Atom("false")
	case List:
		if len(v.Elems) == 0 {
			if v.Tail == nil {
				return Nil{}
			}
			return normalize(v.Tail)
		}
	}
	return t
}

func normUint(u uint64) Term {
	if u <= math.MaxInt64 {
		return int64(u)
	}
	return new(big.Int).SetUint64(u)
}

func compareInts(a, b Term) int {
	x, xok := a.(int64)
	y, yok := b.(int64)
	if xok && yok {
		return cmp.Compare(x, y)
	}
	return toBig(a).Cmp(toBig(b))
}

func toBig(t Term) *big.Int {
	switch v := t.(type) {
	case int64:
		return big.NewInt(v)
	case *big.Int:
		if v != nil {
			return v
		}
	}
	return new(big.Int)
}

// compareRefIDs compares reference words as one number, least significant
// word first, which is how the VM orders references of the same node.
func compareRefIDs(x, y []uint32) int {
	trim := func(w []uint32) []uint32 {
		for len(w) > 0 && w[len(w)-1] == 0 {
			w = w[:len(w)-1]
		}
		return w
	}
	x, y = trim(x), trim(y)
	if c := cmp.Compare(len(x), len(y)); c != 0 {
		return c
	}
	for i := len(x) - 1; i >= 0; i-- {
		if c := cmp.Compare(x[i], y[i]); c != 0 {
			return c
		}
	}
	return 0
}

// compareFuns puts closures before external funs, as the VM does.
func compareFuns(a, b Term) int {
	switch x := a.(type) {
	case Opaque:
		y, ok := b.(Opaque)
		if !ok {
			return -1
		}
		if c := cmp.Compare(x.Tag, y.Tag); c != 0 {
			return c
		}
		return bytes.Compare(x.Raw, y.Raw)
	case Export:
		y, ok := b.(Export)
		if !ok {
			return 1
		}
		if c := strings.Compare(string(x.Module), string(y.Module)); c != 0 {
			return c
		}
		if c := strings.Compare(string(x.Function), string(y.Function)); c != 0 {
			return c
		}
		return cmp.Compare(x.Arity, y.Arity)
	}
	return 0
}

// compareMaps orders maps by size, then keys in key order, then values in
// key order.
func compareMaps(x, y Map) int {
	if c := cmp.Compare(len(x), len(y)); c != 0 {
		return c
	}
	x, y = sortedPairs(x), sortedPairs(y)
	for i := range x {
		if c := Compare(x[i].Key, y[i].Key); c != 0 {
			return c
		}
	}
	for i := range x {
		if c := Compare(x[i].Value, y[i].Value); c != 0 {
			return c
		}
	}
	return 0
}

// sortedPairs returns m in key order, copying only when it is not sorted
// already (decoded small maps always are).
func sortedPairs(m Map) Map {
	if isSorted(m) {
		return m
	}
	s := slices.Clone(m)
	slices.SortStableFunc(s, func(p, q MapPair) int { return Compare(p.Key, q.Key) })
	return s
}

func isSorted(m Map) bool {
	for i := 1; i < len(m); i++ {
		if Compare(m[i-1].Key, m[i].Key) >= 0 {
			return false
		}
	}
	return true
}

// duplicateKey reports a key that occurs twice in m.
func duplicateKey(m Map) (Term, bool) {
	if isSorted(m) {
		return nil, false
	}
	s := sortedPairs(m)
	for i := 1; i < len(s); i++ {
		if Compare(s[i-1].Key, s[i].Key) == 0 {
			return s[i].Key, true
		}
	}
	return nil, false
}

// cons is a cursor over a list's cells, hiding the List/String difference.
type cons struct {
	list List
	str  String
	i    int
}

func newCons(t Term) cons {
	switch v := t.(type) {
	case String:
		return cons{str: v}
	case List:
		return cons{list: v}
	}
	return cons{}
}

func (c *cons) len() int {
	if c.str != nil {
		return len(c.str)
	}
	return len(c.list.Elems)
}

func (c *cons) at(i int) Term {
	if c.str != nil {
		return int64(c.str[i])
	}
	return c.list.Elems[i]
}

// rest is the list from element i on, or the tail when i is past the end.
func (c *cons) rest(i int) Term {
	if i < c.len() {
		if c.str != nil {
			return c.str[i:]
		}
		return List{Elems: c.list.Elems[i:], Tail: c.list.Tail}
	}
	if c.str != nil || c.list.Tail == nil {
		return Nil{}
	}
	return c.list.Tail
}

// compareLists compares two non-empty lists cell by cell; when one runs out
// of elements its tail is compared with the rest of the other, which is
// what comparing cons cells amounts to.
func compareLists(a, b Term) int {
	x, y := newCons(a), newCons(b)
	n := min(x.len(), y.len())
	for i := range n {
		if c := Compare(x.at(i), y.at(i)); c != 0 {
			return c
		}
	}
	return Compare(x.rest(n), y.rest(n))
}

// bitsOf returns the bytes of a bitstring and its length in bits.
func bitsOf(t Term) ([]byte, int) {
	switch v := t.(type) {
	case Binary:
		return v, 8 * len(v)
	case Bitstring:
		if len(v.Bytes) == 0 {
			return nil, 0
		}
		bits := int(v.Bits)
		if bits == 0 || bits > 8 { // invalid; Encode rejects it, Compare must not panic
			bits = 8
		}
		return v.Bytes, 8*(len(v.Bytes)-1) + bits
	}
	return nil, 0
}

// compareBits compares bitstrings bit by bit; a proper prefix sorts first.
func compareBits(a, b Term) int {
	x, xn := bitsOf(a)
	y, yn := bitsOf(b)
	n := min(xn, yn)
	full := n / 8
	if c := bytes.Compare(x[:full], y[:full]); c != 0 {
		return c
	}
	if r := n % 8; r != 0 {
		if c := cmp.Compare(x[full]>>(8-r), y[full]>>(8-r)); c != 0 {
			return c
		}
	}
	return cmp.Compare(xn, yn)
}

func typeName(t Term) string { return fmt.Sprintf("%T", t) }
