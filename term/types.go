package term

// Term is any value of the model described in the package documentation.
// It is an alias rather than an interface with methods so that int64,
// float64 and *big.Int can be used directly.
type Term = any

// Atom is an Erlang atom, held as UTF-8 text. Atoms decoded from the Latin-1
// encodings (ATOM_EXT, SMALL_ATOM_EXT) are converted to UTF-8.
type Atom string

// Binary is an Erlang binary (a bitstring whose length is a whole number of
// bytes).
type Binary []byte

// Bitstring is a bitstring whose length is not a whole number of bytes,
// from BIT_BINARY_EXT. Bits is how many high-order bits of the last byte
// belong to the value (1..7); the unused low bits are always zero after
// Decode. A Bitstring with Bits 8 (or no bytes and Bits 0) is a binary and
// Decode returns it as Binary instead.
type Bitstring struct {
	Bytes []byte
	Bits  uint8
}

// Tuple is an Erlang tuple.
type Tuple []Term

// Nil is the empty list [].
type Nil struct{}

// String is a proper list of integers in 0..255, as written by STRING_EXT
// (term_to_binary's encoding of such lists when shorter than 65536
// elements). It is not an Erlang binary: String("abc") is the Erlang term
// "abc" = [97,98,99].
type String []byte

// List is a non-empty list. Tail is nil for a proper list; for an improper
// list such as [1,2|3] it holds the final tail (here int64(3)). Decode never
// returns a List with no elements (that would be its tail) nor a Tail that
// is itself a list, String or Nil (such encodings are flattened).
type List struct {
	Elems []Term
	Tail  Term
}

// MapPair is one association of a Map.
type MapPair struct {
	Key, Value Term
}

// Map is an Erlang map as an ordered list of pairs. Decode keeps the order
// of the encoding (see the package documentation for why that matters) and
// rejects duplicate keys, like binary_to_term. Keys may be any term.
type Map []MapPair

// Get returns the value for key (compared with Equal) and whether it was
// present. It is a linear scan: maps in session values are small.
func (m Map) Get(key Term) (Term, bool) {
	for _, p := range m {
		if Equal(p.Key, key) {
			return p.Value, true
		}
	}
	return nil, false
}

// Pid is a process identifier (NEW_PID_EXT; old PID_EXT decodes to the same
// value with its 8-bit creation widened).
type Pid struct {
	Node     Atom
	ID       uint32
	Serial   uint32
	Creation uint32
}

// Ref is a reference (NEWER_REFERENCE_EXT; REFERENCE_EXT and
// NEW_REFERENCE_EXT decode to the same value). ID holds the words in
// encoding order, least significant first.
type Ref struct {
	Node     Atom
	Creation uint32
	ID       []uint32
}

// Port is a port identifier (NEW_PORT_EXT, or V4_PORT_EXT when ID needs
// more than 32 bits; old PORT_EXT decodes to the same value).
type Port struct {
	Node     Atom
	ID       uint64
	Creation uint32
}

// Export is an external fun, fun Module:Function/Arity (EXPORT_EXT).
type Export struct {
	Module   Atom
	Function Atom
	Arity    uint8
}

// Opaque is a term migctl has no reason to look inside, kept verbatim so it
// re-encodes byte for byte. Decode produces it only for closures
// (NEW_FUN_EXT, Tag 112); Raw is everything after the tag byte, the Size
// field included. Decode checks that Raw is well formed.
type Opaque struct {
	Tag byte
	Raw []byte
}

// External term format tags. Names follow erts' external.h.
const (
	versionMagic = 131

	tagNewFloat      = 70  // NEW_FLOAT_EXT
	tagBitBinary     = 77  // BIT_BINARY_EXT
	tagCompressed    = 80  // COMPRESSED (after the version byte only)
	tagAtomCacheRef  = 82  // ATOM_CACHE_REF (distribution only)
	tagNewPid        = 88  // NEW_PID_EXT
	tagNewPort       = 89  // NEW_PORT_EXT
	tagNewerRef      = 90  // NEWER_REFERENCE_EXT
	tagSmallInteger  = 97  // SMALL_INTEGER_EXT
	tagInteger       = 98  // INTEGER_EXT
	tagFloat         = 99  // FLOAT_EXT (31-byte text)
	tagAtom          = 100 // ATOM_EXT (Latin-1)
	tagReference     = 101 // REFERENCE_EXT
	tagPort          = 102 // PORT_EXT
	tagPid           = 103 // PID_EXT
	tagSmallTuple    = 104 // SMALL_TUPLE_EXT
	tagLargeTuple    = 105 // LARGE_TUPLE_EXT
	tagNil           = 106 // NIL_EXT
	tagString        = 107 // STRING_EXT
	tagList          = 108 // LIST_EXT
	tagBinary        = 109 // BINARY_EXT
	tagSmallBig      = 110 // SMALL_BIG_EXT
	tagLargeBig      = 111 // LARGE_BIG_EXT
	tagNewFun        = 112 // NEW_FUN_EXT
	tagExport        = 113 // EXPORT_EXT
	tagNewReference  = 114 // NEW_REFERENCE_EXT
	tagSmallAtom     = 115 // SMALL_ATOM_EXT (Latin-1)
	tagMap           = 116 // MAP_EXT
	tagFun           = 117 // FUN_EXT (obsolete, rejected by OTP 23+)
	tagAtomUTF8      = 118 // ATOM_UTF8_EXT
	tagSmallAtomUTF8 = 119 // SMALL_ATOM_UTF8_EXT
	tagV4Port        = 120 // V4_PORT_EXT
	tagLocal         = 121 // LOCAL_EXT (OTP 26+, node-local, undocumented)
)

// Limits shared by Decode and Encode. They mirror the VM's.
const (
	// MaxDepth is how deeply terms may nest before Decode gives up. Real
	// session values nest a handful of levels; the bound exists so hostile
	// input cannot exhaust the stack.
	MaxDepth = 10000

	// MaxAtomChars is the VM's limit on the characters in an atom.
	MaxAtomChars = 255

	// maxRefWords is the most ID words a reference may have (OTP 25).
	maxRefWords = 5

	// smallMapLimit is the VM's flatmap size limit: maps up to this many
	// keys are written in key order by term_to_binary.
	smallMapLimit = 32

	// maxStringExt is the longest list STRING_EXT can carry.
	maxStringExt = 65535
)
