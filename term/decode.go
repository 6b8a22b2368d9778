package term

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// DecodeError reports malformed input. Offset is the byte offset in the
// input where the problem was found; when the input was a COMPRESSED blob
// and the problem lies in its payload, InCompressed is set and Offset
// counts from the start of the decompressed payload instead.
type DecodeError struct {
	Offset       int
	InCompressed bool
	Reason       string
}

func (e *DecodeError) Error() string {
	if e.InCompressed {
		return fmt.Sprintf("etf: decode: offset %d of decompressed payload: %s", e.Offset, e.Reason)
	}
	return fmt.Sprintf("etf: decode: offset %d: %s", e.Offset, e.Reason)
}

// DefaultMaxUncompressed caps the payload size a COMPRESSED blob may claim.
// Session values are at most a few megabytes; the cap keeps a forged size
// field (or a zip bomb) from costing gigabytes.
const DefaultMaxUncompressed = 256 << 20

// DecodeOptions tunes decoding. The zero value is what Decode uses.
type DecodeOptions struct {
	// MaxDepth bounds nesting; 0 means the package's MaxDepth.
	MaxDepth int
	// MaxUncompressed bounds the decompressed size of a COMPRESSED blob;
	// 0 means DefaultMaxUncompressed.
	MaxUncompressed int
	// NoCopy makes Binary, Bitstring, String and Opaque values alias the
	// input instead of copying it. It saves a copy per binary (which
	// matters for megabyte metadata) but the caller must then keep the
	// input alive and unmodified for as long as the term is used. Do not
	// use it on buffers that are only valid for a while, such as values
	// read inside a bbolt transaction.
	NoCopy bool
}

// Decode decodes a complete term_to_binary blob: the version byte 131
// followed by one term, optionally COMPRESSED. Trailing bytes are an error.
// The result does not alias b.
func Decode(b []byte) (Term, error) { return DecodeOptions{}.Decode(b) }

// DecodeValue decodes one encoded term that has no version byte, such as the
// slices WalkMap and LookupMapKeysRaw return. The whole of raw must be the
// term.
func DecodeValue(raw []byte) (Term, error) { return DecodeOptions{}.DecodeValue(raw) }

// Decode is Decode with these options.
func (o DecodeOptions) Decode(b []byte) (Term, error) {
	payload, base, compressed, err := o.unwrap(b)
	if err != nil {
		return nil, err
	}
	d := o.decoder(payload, compressed)
	// A decompressed payload belongs to us, so aliasing it is always safe.
	d.noCopy = d.noCopy || compressed
	t, end, err := d.term(base)
	if err != nil {
		return nil, err
	}
	if end != len(payload) {
		return nil, d.errf(end, "%d trailing bytes after the term", len(payload)-end)
	}
	return t, nil
}

// DecodeValue is DecodeValue with these options.
func (o DecodeOptions) DecodeValue(raw []byte) (Term, error) {
	d := o.decoder(raw, false)
	t, end, err := d.term(0)
	if err != nil {
		return nil, err
	}
	if end != len(raw) {
		return nil, d.errf(end, "%d trailing bytes after the term", len(raw)-end)
	}
	return t, nil
}

func (o DecodeOptions) decoder(b []byte, compressed bool) *decoder {
	maxDepth := o.MaxDepth
	if maxDepth <= 0 {
		maxDepth = MaxDepth
	}
	return &decoder{b: b, maxDepth: maxDepth, noCopy: o.NoCopy, compressed: compressed, budget: len(b)}
}

// unwrap checks the version byte and inflates a COMPRESSED blob. It returns
// the buffer holding the first term's tag and that tag's offset.
func (o DecodeOptions) unwrap(b []byte) (payload []byte, start int, compressed bool, err error) {
	if len(b) == 0 {
		return nil, 0, false, &DecodeError{Offset: 0, Reason: "empty input"}
	}
	if b[0] != versionMagic {
		return nil, 0, false, &DecodeError{Offset: 0, Reason: fmt.Sprintf("version byte is %d, want 131 (not a term_to_binary blob)", b[0])}
	}
	if len(b) < 2 {
		return nil, 0, false, &DecodeError{Offset: 1, Reason: "no term after the version byte"}
	}
	if b[1] != tagCompressed {
		return b, 1, false, nil
	}
	if len(b) < 6 {
		return nil, 0, false, &DecodeError{Offset: 2, Reason: "COMPRESSED: truncated uncompressed-size field"}
	}
	size := uint64(binary.BigEndian.Uint32(b[2:6]))
	limit := o.MaxUncompressed
	if limit <= 0 {
		limit = DefaultMaxUncompressed
	}
	if size > uint64(limit) {
		return nil, 0, false, &DecodeError{Offset: 2, Reason: fmt.Sprintf("COMPRESSED: uncompressed size %d exceeds the limit of %d bytes", size, limit)}
	}
	// Deflate cannot expand data by more than about 1032:1, so a larger
	// claim is a lie; refusing it early avoids a pointless allocation.
	if zlen := uint64(len(b) - 6); size > zlen*1032+64 {
		return nil, 0, false, &DecodeError{Offset: 2, Reason: fmt.Sprintf("COMPRESSED: uncompressed size %d is impossible for %d compressed bytes", size, zlen)}
	}
	if size == 0 {
		return nil, 0, false, &DecodeError{Offset: 2, Reason: "COMPRESSED: uncompressed size is 0"}
	}
	zr, err := zlib.NewReader(bytes.NewReader(b[6:]))
	if err != nil {
		return nil, 0, false, &DecodeError{Offset: 6, Reason: "COMPRESSED: bad zlib header: " + err.Error()}
	}
	// Grow with the data actually inflated rather than trusting the size
	// field for the initial allocation.
	var buf bytes.Buffer
	buf.Grow(int(min(size, uint64(4*len(b)+512))))
	n, err := io.Copy(&buf, io.LimitReader(zr, int64(size)+1))
	if err != nil {
		return nil, 0, false, &DecodeError{Offset: 6, Reason: "COMPRESSED: corrupt zlib data: " + err.Error()}
	}
	if uint64(n) != size {
		return nil, 0, false, &DecodeError{Offset: 2, Reason: fmt.Sprintf("COMPRESSED: payload inflates to %d bytes, header says %d", n, size)}
	}
	// Reading to EOF verifies the zlib checksum.
	if err := zr.Close(); err != nil {
		return nil, 0, false, &DecodeError{Offset: 6, Reason: "COMPRESSED: " + err.Error()}
	}
	return buf.Bytes(), 0, true, nil
}

type decoder struct {
	b          []byte
	depth      int
	maxDepth   int
	noCopy     bool
	compressed bool
	// budget is how many more elements may be preallocated from length
	// fields; see capFor.
	budget int
}

// capFor returns the capacity to preallocate for a container that claims n
// elements. Every element takes at least one input byte, so a well-formed
// input never claims more elements in total than it has bytes, and the
// budget (the input length) covers all of them. A forged input can make each
// of thousands of nested headers claim the rest of the input; without the
// budget that would preallocate quadratically much memory before the lie is
// found. Past the budget, containers start small and grow as elements
// actually decode.
func (d *decoder) capFor(n int) int {
	if n <= d.budget {
		d.budget -= n
		return n
	}
	return min(n, 4)
}

func (d *decoder) errf(off int, format string, args ...any) error {
	return &DecodeError{Offset: off, InCompressed: d.compressed, Reason: fmt.Sprintf(format, args...)}
}

// need checks that n bytes starting at off are present. what names the
// field for the error message.
func (d *decoder) need(off, n int, what string) error {
	if n < 0 || off > len(d.b) || n > len(d.b)-off {
		return d.errf(off, "%s: need %d bytes, only %d left", what, n, max(len(d.b)-off, 0))
	}
	return nil
}

// length reads a big-endian length field of w bytes at off and checks that
// at least minEach*length further bytes remain, so that no slice is ever
// allocated from a length the input cannot back.
func (d *decoder) length(off, w, minEach int, what string) (int, error) {
	if off > len(d.b) || w > len(d.b)-off {
		return 0, d.need(off, w, what+" length") // builds the message
	}
	var n uint64
	switch w {
	case 1:
		n = uint64(d.b[off])
	case 2:
		n = uint64(binary.BigEndian.Uint16(d.b[off:]))
	case 4:
		n = uint64(binary.BigEndian.Uint32(d.b[off:]))
	}
	left := uint64(len(d.b) - off - w)
	if n*uint64(minEach) > left {
		return 0, d.errf(off, "%s length %d exceeds the %d bytes left", what, n, left)
	}
	return int(n), nil
}

func (d *decoder) bytes(off, n int) []byte {
	s := d.b[off : off+n : off+n]
	if d.noCopy {
		return s
	}
	return bytes.Clone(s)
}

func (d *decoder) enter(off int) error {
	d.depth++
	if d.depth > d.maxDepth {
		return d.errf(off, "terms nested deeper than %d levels", d.maxDepth)
	}
	return nil
}

// term decodes the term whose tag is at off and returns it with the offset
// just past it.
func (d *decoder) term(off int) (Term, int, error) {
	if off >= len(d.b) {
		return nil, off, d.errf(off, "unexpected end of input, expected a term")
	}
	tag := d.b[off]
	p := off + 1
	switch tag {
	case tagSmallInteger:
		if err := d.need(p, 1, "SMALL_INTEGER_EXT"); err != nil {
			return nil, off, err
		}
		return int64(d.b[p]), p + 1, nil

	case tagInteger:
		if err := d.need(p, 4, "INTEGER_EXT"); err != nil {
			return nil, off, err
		}
		return int64(int32(binary.BigEndian.Uint32(d.b[p:]))), p + 4, nil

	case tagSmallBig, tagLargeBig:
		w := 1
		if tag == tagLargeBig {
			w = 4
		}
		n, err := d.length(p, w, 1, "big integer")
		if err != nil {
			return nil, off, err
		}
		p += w
		if err := d.need(p, 1+n, "big integer digits"); err != nil {
			return nil, off, err
		}
		// The VM reads any non-zero sign byte as negative; so do we.
		return decodeBig(d.b[p+1:p+1+n], d.b[p] != 0), p + 1 + n, nil

	case tagNewFloat:
		if err := d.need(p, 8, "NEW_FLOAT_EXT"); err != nil {
			return nil, off, err
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(d.b[p:]))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, off, d.errf(p, "NEW_FLOAT_EXT is NaN or infinite, which Erlang has no term for")
		}
		return f, p + 8, nil

	case tagFloat:
		if err := d.need(p, 31, "FLOAT_EXT"); err != nil {
			return nil, off, err
		}
		f, err := parseOldFloat(d.b[p : p+31])
		if err != nil {
			return nil, off, d.errf(p, "FLOAT_EXT: %v", err)
		}
		return f, p + 31, nil

	case tagAtom, tagSmallAtom, tagAtomUTF8, tagSmallAtomUTF8:
		return d.atom(off)

	case tagSmallTuple, tagLargeTuple:
		w := 1
		if tag == tagLargeTuple {
			w = 4
		}
		n, err := d.length(p, w, 1, "tuple arity")
		if err != nil {
			return nil, off, err
		}
		p += w
		if err := d.enter(off); err != nil {
			return nil, off, err
		}
		t := make(Tuple, 0, d.capFor(n))
		for range n {
			var x Term
			if x, p, err = d.term(p); err != nil {
				return nil, off, err
			}
			t = append(t, x)
		}
		d.depth--
		return t, p, nil

	case tagNil:
		return Nil{}, p, nil

	case tagString:
		n, err := d.length(p, 2, 1, "STRING_EXT")
		if err != nil {
			return nil, off, err
		}
		p += 2
		if n == 0 {
			return Nil{}, p, nil
		}
		return String(d.bytes(p, n)), p + n, nil

	case tagList:
		return d.list(off)

	case tagMap:
		return d.mapTerm(off)

	case tagBinary:
		n, err := d.length(p, 4, 1, "BINARY_EXT")
		if err != nil {
			return nil, off, err
		}
		p += 4
		return Binary(d.bytes(p, n)), p + n, nil

	case tagBitBinary:
		n, err := d.length(p, 4, 1, "BIT_BINARY_EXT")
		if err != nil {
			return nil, off, err
		}
		p += 4
		if err := d.need(p, 1+n, "BIT_BINARY_EXT"); err != nil {
			return nil, off, err
		}
		bits := d.b[p]
		p++
		switch {
		case n == 0 && bits == 0:
			return Binary{}, p, nil
		case n == 0 || bits == 0 || bits > 8:
			return nil, off, d.errf(p-1, "BIT_BINARY_EXT with %d bytes cannot use %d bits of the last byte", n, bits)
		case bits == 8:
			return Binary(d.bytes(p, n)), p + n, nil
		}
		// Unused low bits are not part of the value; zero them so that
		// equal bitstrings compare and re-encode equal (the VM does too).
		mask := byte(0xFF) << (8 - bits)
		data := d.b[p : p+n : p+n]
		if data[n-1]&^mask != 0 || !d.noCopy {
			data = bytes.Clone(data)
			data[n-1] &= mask
		}
		return Bitstring{Bytes: data, Bits: bits}, p + n, nil

	case tagNewPid, tagPid:
		node, p, err := d.nodeAtom(p, "pid")
		if err != nil {
			return nil, off, err
		}
		crw := 4
		if tag == tagPid {
			crw = 1
		}
		if err := d.need(p, 8+crw, "pid"); err != nil {
			return nil, off, err
		}
		pid := Pid{Node: node, ID: binary.BigEndian.Uint32(d.b[p:]), Serial: binary.BigEndian.Uint32(d.b[p+4:])}
		pid.Creation = d.uint(p+8, crw)
		return pid, p + 8 + crw, nil

	case tagReference:
		node, p, err := d.nodeAtom(p, "REFERENCE_EXT")
		if err != nil {
			return nil, off, err
		}
		if err := d.need(p, 5, "REFERENCE_EXT"); err != nil {
			return nil, off, err
		}
		return Ref{Node: node, ID: []uint32{binary.BigEndian.Uint32(d.b[p:])}, Creation: uint32(d.b[p+4])}, p + 5, nil

	case tagNewReference, tagNewerRef:
		n, err := d.length(p, 2, 4, "reference")
		if err != nil {
			return nil, off, err
		}
		if n > maxRefWords {
			return nil, off, d.errf(p, "reference has %d ID words, at most %d allowed", n, maxRefWords)
		}
		node, q, err := d.nodeAtom(p+2, "reference")
		if err != nil {
			return nil, off, err
		}
		crw := 4
		if tag == tagNewReference {
			crw = 1
		}
		if err := d.need(q, crw+4*n, "reference"); err != nil {
			return nil, off, err
		}
		r := Ref{Node: node, Creation: d.uint(q, crw), ID: make([]uint32, n)}
		q += crw
		for i := range r.ID {
			r.ID[i] = binary.BigEndian.Uint32(d.b[q:])
			q += 4
		}
		return r, q, nil

	case tagPort, tagNewPort, tagV4Port:
		node, p, err := d.nodeAtom(p, "port")
		if err != nil {
			return nil, off, err
		}
		idw, crw := 4, 4
		switch tag {
		case tagPort:
			crw = 1
		case tagV4Port:
			idw = 8
		}
		if err := d.need(p, idw+crw, "port"); err != nil {
			return nil, off, err
		}
		id := uint64(d.uint(p, 4))
		if idw == 8 {
			id = binary.BigEndian.Uint64(d.b[p:])
		}
		return Port{Node: node, ID: id, Creation: d.uint(p+idw, crw)}, p + idw + crw, nil

	case tagExport:
		mod, p, err := d.atomAt(p, "EXPORT_EXT module")
		if err != nil {
			return nil, off, err
		}
		fn, p, err := d.atomAt(p, "EXPORT_EXT function")
		if err != nil {
			return nil, off, err
		}
		ar, q, err := d.term(p)
		if err != nil {
			return nil, off, err
		}
		a, ok := ar.(int64)
		if !ok || a < 0 || a > 255 {
			return nil, off, d.errf(p, "EXPORT_EXT arity must be an integer 0..255, got %s", Format(ar))
		}
		return Export{Module: mod, Function: fn, Arity: uint8(a)}, q, nil

	case tagNewFun:
		return d.newFun(off)

	case tagCompressed:
		return nil, off, d.errf(off, "COMPRESSED is only allowed right after the version byte")
	case tagAtomCacheRef:
		return nil, off, d.errf(off, "ATOM_CACHE_REF belongs to the distribution protocol, never to term_to_binary output")
	case tagFun:
		return nil, off, d.errf(off, "obsolete FUN_EXT (rejected by OTP 23 and later)")
	case tagLocal:
		return nil, off, d.errf(off, "LOCAL_EXT is node-local and cannot be decoded outside its node")
	}
	return nil, off, d.errf(off, "unknown tag %d", tag)
}

func (d *decoder) uint(off, w int) uint32 {
	if w == 1 {
		return uint32(d.b[off])
	}
	return binary.BigEndian.Uint32(d.b[off:])
}

// decodeBig turns little-endian magnitude digits into int64 when the value
// fits and *big.Int otherwise.
func decodeBig(digits []byte, neg bool) Term {
	n := len(digits)
	for n > 0 && digits[n-1] == 0 {
		n--
	}
	if n <= 8 {
		var u uint64
		for i := n - 1; i >= 0; i-- {
			u = u<<8 | uint64(digits[i])
		}
		switch {
		case !neg && u <= math.MaxInt64:
			return int64(u)
		case neg && u <= 1<<63:
			return -int64(u-1) - 1 // avoids overflow at math.MinInt64
		}
	}
	be := make([]byte, n)
	for i := range n {
		be[n-1-i] = digits[i]
	}
	v := new(big.Int).SetBytes(be)
	if neg {
		v.Neg(v)
	}
	return v
}

// parseOldFloat reads FLOAT_EXT's 31-byte, NUL-padded "%.20e" text. It
// accepts what the VM accepts: an optional sign, digits, a point, digits
// and an optional exponent, with nothing but NULs after the first NUL.
func parseOldFloat(field []byte) (float64, error) {
	s := field
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	ok := digits() > 0 && i < len(s) && s[i] == '.'
	if ok {
		i++
		ok = digits() > 0
	}
	if ok && i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		ok = digits() > 0
	}
	if !ok || i != len(s) {
		return 0, fmt.Errorf("%q is not a float", s)
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return f, nil
}

// internedAtoms holds atoms every session carries, already boxed in an
// interface, so decoding them allocates nothing (the lookup m[string(b)]
// does not allocate either).
var internedAtoms = func() map[string]Term {
	m := map[string]Term{}
	for _, a := range []string{"id", "created_at", "last_accessed", "timeout_ms", "metadata",
		"infinity", "true", "false", "undefined", "nil", "ok", "error", "nonode@nohost"} {
		m[a] = Atom(a)
	}
	return m
}()

// atom decodes an atom whose tag is at off, as a Term.
func (d *decoder) atom(off int) (Term, int, error) {
	raw, utf, end, err := d.atomText(off, "atom")
	if err != nil {
		return nil, off, err
	}
	if t, ok := internedAtoms[string(raw)]; ok {
		return t, end, nil
	}
	a, err := d.atomValue(off, raw, utf, "atom")
	if err != nil {
		return nil, off, err
	}
	return a, end, nil
}

// atomAt decodes an atom at off, failing if the term there is not an atom.
func (d *decoder) atomAt(off int, what string) (Atom, int, error) {
	raw, utf, end, err := d.atomText(off, what)
	if err != nil {
		return "", off, err
	}
	if t, ok := internedAtoms[string(raw)]; ok {
		return t.(Atom), end, nil
	}
	a, err := d.atomValue(off, raw, utf, what)
	return a, end, err
}

// atomText locates the text of the atom at off.
func (d *decoder) atomText(off int, what string) (raw []byte, utf bool, end int, err error) {
	if err := d.need(off, 1, what); err != nil {
		return nil, false, off, err
	}
	tag := d.b[off]
	w := 2
	switch tag {
	case tagSmallAtom, tagSmallAtomUTF8:
		w = 1
	case tagAtom, tagAtomUTF8:
	default:
		return nil, false, off, d.errf(off, "%s: expected an atom, found tag %d", what, tag)
	}
	n, err := d.length(off+1, w, 1, what)
	if err != nil {
		return nil, false, off, err
	}
	p := off + 1 + w
	return d.b[p : p+n], tag == tagAtomUTF8 || tag == tagSmallAtomUTF8, p + n, nil
}

// atomValue validates atom text and converts Latin-1 to UTF-8.
func (d *decoder) atomValue(off int, raw []byte, utf bool, what string) (Atom, error) {
	if utf {
		if !utf8.Valid(raw) {
			return "", d.errf(off, "%s: invalid UTF-8 in atom text", what)
		}
		if c := utf8.RuneCount(raw); c > MaxAtomChars {
			return "", d.errf(off, "%s: atom has %d characters, at most %d allowed", what, c, MaxAtomChars)
		}
		return Atom(raw), nil
	}
	if len(raw) > MaxAtomChars {
		return "", d.errf(off, "%s: atom has %d characters, at most %d allowed", what, len(raw), MaxAtomChars)
	}
	return Atom(latin1ToUTF8(raw)), nil
}

func latin1ToUTF8(b []byte) string {
	ascii := true
	for _, c := range b {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return string(b)
	}
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return string(out)
}

// nodeAtom reads the node name of a pid, port or reference.
func (d *decoder) nodeAtom(off int, what string) (Atom, int, error) {
	return d.atomAt(off, what+" node")
}

func (d *decoder) list(off int) (Term, int, error) {
	if err := d.enter(off); err != nil {
		return nil, off, err
	}
	var elems []Term
	p := off
	// A LIST_EXT whose tail is another LIST_EXT is one Erlang list; the
	// loop flattens such chains in place, so a long chain costs neither
	// recursion depth nor repeated copying.
	for {
		n, err := d.length(p+1, 4, 1, "LIST_EXT")
		if err != nil {
			return nil, off, err
		}
		p += 5
		if elems == nil {
			elems = make([]Term, 0, d.capFor(n))
		} else {
			elems = slices.Grow(elems, d.capFor(n))
		}
		for range n {
			var x Term
			if x, p, err = d.term(p); err != nil {
				return nil, off, err
			}
			elems = append(elems, x)
		}
		if p >= len(d.b) || d.b[p] != tagList {
			break
		}
	}
	tail, p, err := d.term(p)
	if err != nil {
		return nil, off, err
	}
	d.depth--
	if len(elems) == 0 {
		// [|T] is just T; binary_to_term agrees.
		return tail, p, nil
	}
	switch t := tail.(type) {
	case Nil:
		return List{Elems: elems}, p, nil
	case String:
		for _, c := range t {
			elems = append(elems, int64(c))
		}
		return List{Elems: elems}, p, nil
	}
	return List{Elems: elems, Tail: tail}, p, nil
}

func (d *decoder) mapTerm(off int) (Term, int, error) {
	n, err := d.length(off+1, 4, 2, "MAP_EXT")
	if err != nil {
		return nil, off, err
	}
	p := off + 5
	if err := d.enter(off); err != nil {
		return nil, off, err
	}
	m := make(Map, 0, d.capFor(2*n)/2)
	for range n {
		var kv MapPair
		if kv.Key, p, err = d.term(p); err != nil {
			return nil, off, err
		}
		if kv.Value, p, err = d.term(p); err != nil {
			return nil, off, err
		}
		m = append(m, kv)
	}
	d.depth--
	if k, dup := duplicateKey(m); dup {
		return nil, off, d.errf(off, "MAP_EXT has the key %s twice", Format(k))
	}
	return m, p, nil
}

// newFun checks a NEW_FUN_EXT and keeps it verbatim: migctl never needs to
// look inside closures, but it must not accept garbage as one.
func (d *decoder) newFun(off int) (Term, int, error) {
	p := off + 1
	if err := d.need(p, 4, "NEW_FUN_EXT size"); err != nil {
		return nil, off, err
	}
	size := int(binary.BigEndian.Uint32(d.b[p:]))
	const fixed = 4 + 1 + 16 + 4 + 4 // Size, Arity, Uniq, Index, NumFree
	if size < fixed {
		return nil, off, d.errf(p, "NEW_FUN_EXT size %d is smaller than its fixed fields", size)
	}
	if err := d.need(p, size, "NEW_FUN_EXT"); err != nil {
		return nil, off, err
	}
	end := p + size
	numFree := int(binary.BigEndian.Uint32(d.b[p+25:]))
	q := p + fixed
	// Decode the fields only to validate them; a sub-decoder bounded to
	// the fun's bytes keeps a lying Size from reaching past the fun.
	sub := &decoder{b: d.b[:end], depth: d.depth, maxDepth: d.maxDepth, noCopy: true, compressed: d.compressed, budget: size}
	if err := sub.enter(off); err != nil {
		return nil, off, err
	}
	var err error
	if _, q, err = sub.atomAt(q, "NEW_FUN_EXT module"); err != nil {
		return nil, off, err
	}
	for _, what := range []string{"NEW_FUN_EXT old index", "NEW_FUN_EXT old uniq"} {
		var v Term
		if v, q, err = sub.term(q); err != nil {
			return nil, off, err
		}
		if _, ok := v.(int64); !ok {
			return nil, off, d.errf(q, "%s is not an integer", what)
		}
	}
	var pid Term
	pidAt := q
	if pid, q, err = sub.term(q); err != nil {
		return nil, off, err
	}
	if _, ok := pid.(Pid); !ok {
		return nil, off, d.errf(pidAt, "NEW_FUN_EXT pid field is not a pid")
	}
	if numFree > end-q {
		return nil, off, d.errf(p+25, "NEW_FUN_EXT claims %d free variables in %d bytes", numFree, end-q)
	}
	for range numFree {
		if _, q, err = sub.term(q); err != nil {
			return nil, off, err
		}
	}
	if q != end {
		return nil, off, d.errf(p, "NEW_FUN_EXT size %d does not match its contents (%d bytes)", size, q-p)
	}
	return Opaque{Tag: tagNewFun, Raw: d.bytes(p, size)}, end, nil
}
