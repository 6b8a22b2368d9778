package term

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"unicode/utf8"
)

// EncodeOptions selects which term_to_binary behaviour Encode mimics. The
// zero value is OTP 25's term_to_binary/1, i.e. {minor_version, 1}.
type EncodeOptions struct {
	// UTF8Atoms writes every atom as SMALL_ATOM_UTF8_EXT/ATOM_UTF8_EXT,
	// like {minor_version, 2} (term_to_binary/1's default from OTP 26 on).
	// Without it, atoms whose characters are all Latin-1 use ATOM_EXT.
	UTF8Atoms bool
	// TextFloats writes floats as the old 31-byte FLOAT_EXT text, like
	// {minor_version, 0}.
	TextFloats bool
}

// Encode returns the term_to_binary/1 encoding (OTP 25, uncompressed) of t:
// the version byte followed by the term. Besides the model's types it
// accepts Go's other integer types, float32 and bool (as the atoms true and
// false); anything else, nil included, is an error.
func Encode(t Term) ([]byte, error) { return EncodeOptions{}.Append(nil, t) }

// Encode is Encode with these options.
func (o EncodeOptions) Encode(t Term) ([]byte, error) { return o.Append(nil, t) }

// Append appends the encoding of t, version byte included, to dst.
func (o EncodeOptions) Append(dst []byte, t Term) ([]byte, error) {
	e := encoder{opts: o, buf: append(dst, versionMagic)}
	if err := e.term(t); err != nil {
		return dst, fmt.Errorf("etf: encode: %w", err)
	}
	return e.buf, nil
}

type encoder struct {
	opts  EncodeOptions
	buf   []byte
	depth int
}

func (e *encoder) u8(v byte)    { e.buf = append(e.buf, v) }
func (e *encoder) u16(v uint16) { e.buf = binary.BigEndian.AppendUint16(e.buf, v) }
func (e *encoder) u32(v uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }

var errNilTerm = errors.New("nil is not a term (use Nil{} for [])")

func (e *encoder) term(t Term) error {
	switch v := t.(type) {
	case int64:
		e.int(v)
		return nil
	case float64:
		return e.float(v)
	case Atom:
		return e.atom(v)
	case Binary:
		e.binary(v)
		return nil
	case Tuple:
		return e.tuple(v)
	case Map:
		return e.mapTerm(v)
	case List:
		return e.list(v)
	case String:
		e.string(v)
		return nil
	case Nil:
		e.u8(tagNil)
		return nil
	case Bitstring:
		return e.bitstring(v)
	case Pid:
		e.u8(tagNewPid)
		if err := e.atom(v.Node); err != nil {
			return fmt.Errorf("pid node: %w", err)
		}
		e.u32(v.ID)
		e.u32(v.Serial)
		e.u32(v.Creation)
		return nil
	case Ref:
		if len(v.ID) > maxRefWords {
			return fmt.Errorf("reference has %d ID words, at most %d allowed", len(v.ID), maxRefWords)
		}
		e.u8(tagNewerRef)
		e.u16(uint16(len(v.ID)))
		if err := e.atom(v.Node); err != nil {
			return fmt.Errorf("reference node: %w", err)
		}
		e.u32(v.Creation)
		for _, w := range v.ID {
			e.u32(w)
		}
		return nil
	case Port:
		// OTP 25 keeps NEW_PORT_EXT for ids that fit and switches to
		// V4_PORT_EXT only when it must.
		tag := byte(tagNewPort)
		if v.ID > math.MaxUint32 {
			tag = tagV4Port
		}
		e.u8(tag)
		if err := e.atom(v.Node); err != nil {
			return fmt.Errorf("port node: %w", err)
		}
		if tag == tagV4Port {
			e.buf = binary.BigEndian.AppendUint64(e.buf, v.ID)
		} else {
			e.u32(uint32(v.ID))
		}
		e.u32(v.Creation)
		return nil
	case Export:
		e.u8(tagExport)
		if err := e.atom(v.Module); err != nil {
			return fmt.Errorf("export module: %w", err)
		}
		if err := e.atom(v.Function); err != nil {
			return fmt.Errorf("export function: %w", err)
		}
		e.u8(tagSmallInteger)
		e.u8(v.Arity)
		return nil
	case Opaque:
		// Only what Decode produces: anything else could not be checked.
		if v.Tag != tagNewFun {
			return fmt.Errorf("opaque term with tag %d: only NEW_FUN_EXT (112) is supported", v.Tag)
		}
		e.u8(v.Tag)
		e.buf = append(e.buf, v.Raw...)
		return nil
	case *big.Int:
		if v == nil {
			return errNilTerm
		}
		e.bigInt(v)
		return nil
	case nil:
		return errNilTerm
	}
	// Go conveniences: other integer widths, float32, bool.
	switch n := normalize(t).(type) {
	case int64, float64, Atom, *big.Int:
		return e.term(n)
	}
	return fmt.Errorf("unsupported Go type %T", t)
}

var errTooDeep = fmt.Errorf("terms nested deeper than %d levels (a cycle?)", MaxDepth)

func (e *encoder) enter() error {
	e.depth++
	if e.depth > MaxDepth {
		return errTooDeep
	}
	return nil
}

// within adds where an error happened. The nesting error is passed through
// bare: 10,000 levels of "tuple element 1: " would be a useless message
// that costs quadratic time to build.
func within(err error, format string, args ...any) error {
	if err == errTooDeep {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func (e *encoder) int(v int64) {
	switch {
	case v >= 0 && v <= 255:
		e.u8(tagSmallInteger)
		e.u8(byte(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		e.u8(tagInteger)
		e.u32(uint32(int32(v)))
	default:
		mag := uint64(v)
		sign := byte(0)
		if v < 0 {
			mag = uint64(-(v + 1)) + 1 // |MinInt64| without overflow
			sign = 1
		}
		n := (bitsLen64(mag) + 7) / 8
		e.u8(tagSmallBig)
		e.u8(byte(n))
		e.u8(sign)
		for range n {
			e.u8(byte(mag))
			mag >>= 8
		}
	}
}

func bitsLen64(u uint64) int {
	n := 0
	for u != 0 {
		n++
		u >>= 1
	}
	return n
}

func (e *encoder) bigInt(v *big.Int) {
	if v.IsInt64() {
		e.int(v.Int64())
		return
	}
	be := new(big.Int).Abs(v).Bytes() // big-endian, no leading zeros
	n := len(be)
	if n <= 255 {
		e.u8(tagSmallBig)
		e.u8(byte(n))
	} else {
		e.u8(tagLargeBig)
		e.u32(uint32(n))
	}
	if v.Sign() < 0 {
		e.u8(1)
	} else {
		e.u8(0)
	}
	for i := n - 1; i >= 0; i-- {
		e.u8(be[i])
	}
}

func (e *encoder) float(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("float %v has no Erlang representation", f)
	}
	if e.opts.TextFloats {
		// The VM formats with C's "%.20e"; Go's %e also rounds correctly
		// and uses a two-digit minimum exponent, so the text matches.
		var field [31]byte
		copy(field[:], fmt.Sprintf("%.20e", f))
		e.u8(tagFloat)
		e.buf = append(e.buf, field[:]...)
		return nil
	}
	e.u8(tagNewFloat)
	e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(f))
	return nil
}

func (e *encoder) atom(a Atom) error {
	s := string(a)
	if !utf8.ValidString(s) {
		return fmt.Errorf("atom %q is not valid UTF-8", s)
	}
	chars := utf8.RuneCountInString(s)
	if chars > MaxAtomChars {
		return fmt.Errorf("atom has %d characters, at most %d allowed", chars, MaxAtomChars)
	}
	if !e.opts.UTF8Atoms && isLatin1(s) {
		e.u8(tagAtom)
		e.u16(uint16(chars))
		for _, r := range s {
			e.u8(byte(r))
		}
		return nil
	}
	if len(s) <= 255 {
		e.u8(tagSmallAtomUTF8)
		e.u8(byte(len(s)))
	} else {
		e.u8(tagAtomUTF8)
		e.u16(uint16(len(s)))
	}
	e.buf = append(e.buf, s...)
	return nil
}

func isLatin1(s string) bool {
	for _, r := range s {
		if r > 0xFF {
			return false
		}
	}
	return true
}

func (e *encoder) binary(b []byte) {
	e.u8(tagBinary)
	e.u32(uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *encoder) bitstring(v Bitstring) error {
	switch {
	case len(v.Bytes) == 0 && v.Bits == 0, len(v.Bytes) > 0 && v.Bits == 8:
		e.binary(v.Bytes)
		return nil
	case len(v.Bytes) == 0 || v.Bits == 0 || v.Bits > 8:
		return fmt.Errorf("bitstring of %d bytes cannot use %d bits of its last byte", len(v.Bytes), v.Bits)
	}
	e.u8(tagBitBinary)
	e.u32(uint32(len(v.Bytes)))
	e.u8(v.Bits)
	e.buf = append(e.buf, v.Bytes...)
	// The VM writes the unused bits as zero.
	e.buf[len(e.buf)-1] &= byte(0xFF) << (8 - v.Bits)
	return nil
}

func (e *encoder) tuple(t Tuple) error {
	if err := e.enter(); err != nil {
		return err
	}
	if len(t) <= 255 {
		e.u8(tagSmallTuple)
		e.u8(byte(len(t)))
	} else {
		e.u8(tagLargeTuple)
		e.u32(uint32(len(t)))
	}
	for i, x := range t {
		if err := e.term(x); err != nil {
			return within(err, "tuple element %d", i+1)
		}
	}
	e.depth--
	return nil
}

// mapTerm writes small maps in key order, as the VM stores them, and big
// maps in the order given (see the package documentation).
func (e *encoder) mapTerm(m Map) error {
	if err := e.enter(); err != nil {
		return err
	}
	if k, dup := duplicateKey(m); dup {
		return fmt.Errorf("map has the key %s twice", Format(k))
	}
	if len(m) <= smallMapLimit {
		m = sortedPairs(m)
	}
	e.u8(tagMap)
	e.u32(uint32(len(m)))
	for _, p := range m {
		if err := e.term(p.Key); err != nil {
			return within(err, "map key %s", Format(p.Key))
		}
		if err := e.term(p.Value); err != nil {
			return within(err, "map value for %s", Format(p.Key))
		}
	}
	e.depth--
	return nil
}

// string writes a byte list the way term_to_binary does: STRING_EXT when it
// fits, otherwise a LIST_EXT of small integers.
func (e *encoder) string(s String) {
	switch {
	case len(s) == 0:
		e.u8(tagNil)
	case len(s) <= maxStringExt:
		e.u8(tagString)
		e.u16(uint16(len(s)))
		e.buf = append(e.buf, s...)
	default:
		e.u8(tagList)
		e.u32(uint32(len(s)))
		for _, c := range s {
			e.u8(tagSmallInteger)
			e.u8(c)
		}
		e.u8(tagNil)
	}
}

func (e *encoder) list(l List) error {
	elems, tail := flattenList(l)
	if len(elems) == 0 {
		if tail == nil {
			e.u8(tagNil)
			return nil
		}
		return e.term(tail)
	}
	if tail == nil && len(elems) <= maxStringExt {
		if s, ok := asBytes(elems); ok {
			e.string(s)
			return nil
		}
	}
	if err := e.enter(); err != nil {
		return err
	}
	e.u8(tagList)
	e.u32(uint32(len(elems)))
	for i, x := range elems {
		if err := e.term(x); err != nil {
			return within(err, "list element %d", i+1)
		}
	}
	if tail == nil {
		e.u8(tagNil)
	} else if err := e.term(tail); err != nil {
		return within(err, "list tail")
	}
	e.depth--
	return nil
}

// flattenList merges tails that are themselves lists into one element
// slice, because the VM has no such thing as a list-valued tail: [1|[2]] is
// [1,2]. The returned tail is nil for a proper list. It copies only when
// there is something to merge.
func flattenList(l List) ([]Term, Term) {
	elems, tail := l.Elems, l.Tail
	copied := false
	for range MaxDepth {
		switch t := tail.(type) {
		case nil, Nil:
			return elems, nil
		case String:
			if !copied {
				elems, copied = append([]Term(nil), elems...), true
			}
			for _, c := range t {
				elems = append(elems, int64(c))
			}
			return elems, nil
		case List:
			if !copied {
				elems, copied = append([]Term(nil), elems...), true
			}
			elems = append(elems, t.Elems...)
			tail = t.Tail
			continue
		}
		return elems, tail
	}
	return elems, tail
}

// asBytes reports whether every element is an integer 0..255 and returns
// them as bytes.
func asBytes(elems []Term) (String, bool) {
	s := make(String, len(elems))
	for i, x := range elems {
		n, ok := normalize(x).(int64)
		if !ok || n < 0 || n > 255 {
			return nil, false
		}
		s[i] = byte(n)
	}
	return s, true
}
