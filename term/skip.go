package term

import (
	"encoding/binary"
	"unicode/utf8"
)

// Skip returns the length of the encoded term at the start of raw (a term
// without version byte), without building it. The cost does not depend on
// the size of binaries, only on the number of terms walked. Skip checks the
// structure (tags, lengths, nesting) but not the contents a full Decode
// checks, such as UTF-8 in atoms or duplicate map keys.
func Skip(raw []byte) (int, error) {
	d := &decoder{b: raw, maxDepth: MaxDepth}
	return d.skip(0)
}

// WalkMap calls fn with the encoded key and value of each pair of the map
// that blob holds, in encoding order, until fn returns false. blob is a
// term_to_binary blob (version byte, possibly COMPRESSED) whose top-level
// term must be a map. key and value alias blob (or its decompressed
// payload); decode them with DecodeValue. Pairs are checked structurally as
// Skip does, and only up to the point where fn stops the walk.
func WalkMap(blob []byte, fn func(key, value []byte) bool) error {
	payload, start, compressed, err := DecodeOptions{}.unwrap(blob)
	if err != nil {
		return err
	}
	d := &decoder{b: payload, maxDepth: MaxDepth, compressed: compressed}
	if payload[start] != tagMap {
		return d.errf(start, "top-level term is not a map (tag %d)", payload[start])
	}
	n, err := d.length(start+1, 4, 2, "MAP_EXT")
	if err != nil {
		return err
	}
	p := start + 5
	d.depth = 1
	for range n {
		k, err := d.skip(p)
		if err != nil {
			return err
		}
		v, err := d.skip(k)
		if err != nil {
			return err
		}
		if !fn(payload[p:k:k], payload[k:v:v]) {
			return nil
		}
		p = v
	}
	if p != len(payload) {
		return d.errf(p, "%d trailing bytes after the term", len(payload)-p)
	}
	return nil
}

// LookupMapKeys returns, for each of keys, the decoded value stored under
// that atom key in the top-level map of blob, or nil when the key is
// absent. Values of other keys are skipped, not decoded, which is what
// makes reading id and last_accessed from a session with megabytes of
// metadata cheap. Keys of other types (binaries, tuples, ...) never match.
// The values do not alias blob.
func LookupMapKeys(blob []byte, keys ...string) ([]Term, error) {
	raws, err := LookupMapKeysRaw(blob, keys...)
	if err != nil {
		return nil, err
	}
	out := make([]Term, len(keys))
	for i, r := range raws {
		if r == nil {
			continue
		}
		if out[i], err = DecodeValue(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LookupMapKeysRaw is LookupMapKeys returning the encoded values (aliasing
// blob or its decompressed payload) instead of decoding them. The walk
// stops as soon as every key has been found.
func LookupMapKeysRaw(blob []byte, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	left := len(keys)
	err := WalkMap(blob, func(k, v []byte) bool {
		for i, want := range keys {
			if out[i] == nil && atomIs(k, want) {
				out[i] = v
				left--
				break
			}
		}
		return left > 0
	})
	return out, err
}

// atomIs reports whether raw encodes the atom want, without allocating.
func atomIs(raw []byte, want string) bool {
	if len(raw) < 2 {
		return false
	}
	var text []byte
	latin1 := false
	switch raw[0] {
	case tagSmallAtomUTF8, tagSmallAtom:
		text = raw[2:]
		latin1 = raw[0] == tagSmallAtom
	case tagAtomUTF8, tagAtom:
		if len(raw) < 3 {
			return false
		}
		text = raw[3:]
		latin1 = raw[0] == tagAtom
	default:
		return false
	}
	if !latin1 {
		return string(text) == want
	}
	i := 0
	for _, r := range want {
		if i >= len(text) || rune(text[i]) != r {
			return false
		}
		i++
	}
	return i == len(text) && utf8.ValidString(want)
}

// skip returns the offset just past the term at off.
func (d *decoder) skip(off int) (int, error) {
	if off >= len(d.b) {
		return off, d.errf(off, "unexpected end of input, expected a term")
	}
	tag := d.b[off]
	p := off + 1
	fixed := func(n int, what string) (int, error) {
		if err := d.need(p, n, what); err != nil {
			return off, err
		}
		return p + n, nil
	}
	switch tag {
	case tagSmallInteger:
		return fixed(1, "SMALL_INTEGER_EXT")
	case tagInteger:
		return fixed(4, "INTEGER_EXT")
	case tagNewFloat:
		return fixed(8, "NEW_FLOAT_EXT")
	case tagFloat:
		return fixed(31, "FLOAT_EXT")
	case tagNil:
		return p, nil
	case tagSmallBig, tagLargeBig:
		w := 1
		if tag == tagLargeBig {
			w = 4
		}
		n, err := d.length(p, w, 1, "big integer")
		if err != nil {
			return off, err
		}
		p += w
		return fixed(1+n, "big integer digits")
	case tagAtom, tagSmallAtom, tagAtomUTF8, tagSmallAtomUTF8:
		w := 2
		if tag == tagSmallAtom || tag == tagSmallAtomUTF8 {
			w = 1
		}
		n, err := d.length(p, w, 1, "atom")
		if err != nil {
			return off, err
		}
		return p + w + n, nil
	case tagString:
		n, err := d.length(p, 2, 1, "STRING_EXT")
		if err != nil {
			return off, err
		}
		return p + 2 + n, nil
	case tagBinary:
		n, err := d.length(p, 4, 1, "BINARY_EXT")
		if err != nil {
			return off, err
		}
		return p + 4 + n, nil
	case tagBitBinary:
		n, err := d.length(p, 4, 1, "BIT_BINARY_EXT")
		if err != nil {
			return off, err
		}
		p += 4
		return fixed(1+n, "BIT_BINARY_EXT")
	case tagSmallTuple, tagLargeTuple, tagList, tagMap:
		w, per, extra := 4, 1, 0
		switch tag {
		case tagSmallTuple:
			w = 1
		case tagMap:
			per = 2
		case tagList:
			extra = 1 // the tail
		}
		n, err := d.length(p, w, per, "compound term")
		if err != nil {
			return off, err
		}
		if err := d.enter(off); err != nil {
			return off, err
		}
		p += w
		for range n*per + extra {
			if p, err = d.skip(p); err != nil {
				return off, err
			}
		}
		d.depth--
		return p, nil
	case tagNewPid, tagPid, tagReference, tagPort, tagNewPort, tagV4Port:
		q, err := d.skipAtom(p)
		if err != nil {
			return off, err
		}
		p = q
		var n int
		switch tag {
		case tagNewPid, tagV4Port:
			n = 12 // ID+Serial+Creation(4); ID(8)+Creation(4)
		case tagPid:
			n = 9
		case tagNewPort:
			n = 8
		default: // REFERENCE_EXT, PORT_EXT
			n = 5
		}
		return fixed(n, "pid/port/reference")
	case tagNewReference, tagNewerRef:
		n, err := d.length(p, 2, 4, "reference")
		if err != nil {
			return off, err
		}
		q, err := d.skipAtom(p + 2)
		if err != nil {
			return off, err
		}
		p = q
		crw := 4
		if tag == tagNewReference {
			crw = 1
		}
		return fixed(crw+4*n, "reference")
	case tagExport:
		q, err := d.skipAtom(p)
		if err != nil {
			return off, err
		}
		if q, err = d.skipAtom(q); err != nil {
			return off, err
		}
		return d.skip(q)
	case tagNewFun:
		if err := d.need(p, 4, "NEW_FUN_EXT size"); err != nil {
			return off, err
		}
		size := int(binary.BigEndian.Uint32(d.b[p:]))
		if size < 4 {
			return off, d.errf(p, "NEW_FUN_EXT size %d is too small", size)
		}
		return fixed(size, "NEW_FUN_EXT")
	}
	// Everything else is rejected with the same message Decode gives.
	_, _, err := d.term(off)
	if err == nil {
		err = d.errf(off, "unknown tag %d", tag)
	}
	return off, err
}

func (d *decoder) skipAtom(off int) (int, error) {
	if off < len(d.b) {
		switch d.b[off] {
		case tagAtom, tagSmallAtom, tagAtomUTF8, tagSmallAtomUTF8:
			return d.skip(off)
		}
	}
	return off, d.errf(off, "expected an atom (node or module name)")
}
