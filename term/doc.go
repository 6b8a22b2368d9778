// Package term decodes and encodes Erlang's external term format (ETF), the
// byte format produced by term_to_binary/1 and read by binary_to_term/1.
//
// migctl needs to look inside session values that travel as ETF blobs, but
// it never needs to rebuild a blob in order to copy it: copies always carry
// the original bytes. Decoding therefore favours fidelity (every detail a
// canonical blob carries survives a Decode/Encode round trip) over
// convenience.
//
// # Value model
//
// A decoded term is a Go value of one of these types (Term is any):
//
//	Erlang                      Go
//	integer                     int64, or *big.Int when it does not fit
//	float                       float64
//	atom                        Atom (UTF-8 text; true/false/infinity are atoms)
//	binary                      Binary
//	bitstring (not whole bytes) Bitstring
//	tuple                       Tuple
//	[]                          Nil
//	"abc" (STRING_EXT)          String
//	any other list              List (Tail nil = proper list)
//	map                         Map (ordered pairs)
//	pid, reference, port        Pid, Ref, Port
//	fun M:F/A                   Export
//	fun (closure)               Opaque{Tag: 112}, the body kept verbatim
//
// Strings: term_to_binary writes a proper list of integers 0..255 shorter
// than 65536 elements as STRING_EXT. Decode returns that as String, a byte
// slice, rather than a List of int64s: it is cheaper (no boxing per element)
// and formats readably. A list of small integers that is longer, or that
// came as LIST_EXT, decodes to List. Encode treats both the same way
// term_to_binary would, and Equal considers String("ab") and
// List{Elems: []Term{int64(97), int64(98)}} equal, as Erlang does.
//
// Lists are normalised while decoding: a LIST_EXT whose tail is itself a
// list or string is flattened, and a LIST_EXT with zero elements is its tail.
// binary_to_term does the same, and it keeps Equal simple.
//
// # Byte-exact round trips
//
// Encode reproduces OTP 25's term_to_binary/1 (minor_version 1): the
// smallest integer encoding, NEW_FLOAT_EXT, ATOM_EXT for atoms whose
// characters are all Latin-1 and SMALL_ATOM_UTF8_EXT/ATOM_UTF8_EXT for the
// others, STRING_EXT for byte lists, NEW_PID_EXT, NEWER_REFERENCE_EXT and
// NEW_PORT_EXT/V4_PORT_EXT. EncodeOptions can instead mimic the other
// minor versions: UTF8Atoms is {minor_version, 2}, OTP 26's default;
// TextFloats is {minor_version, 0}.
//
// Maps need care. A map of at most 32 keys is a "flatmap" inside the VM and
// term_to_binary writes it in key order (all integers before all floats,
// then the standard term order), so Encode sorts maps of up to 32 pairs the
// same way. A bigger map is a hash trie whose iteration order depends on
// the VM's internal hash; Encode cannot reproduce that from scratch and
// writes such maps in the order given. Because Decode keeps the pair order
// it read, Encode(Decode(b)) is byte-identical to b for every uncompressed
// blob term_to_binary produces, large maps included.
//
// A consequence worth knowing: on OTP 25 the hash of an atom depends on the
// atom's index in the node's atom table, so the same map of more than 32
// atom keys is written in different byte orders by different nodes (the
// Erlang round-trip test sees term_to_binary(binary_to_term(B)) =/= B on a
// second node). Never conclude that two stored values differ because their
// bytes do; compare them with Equal.
//
// Things deliberately not reproduced: compression (Decode reads COMPRESSED
// blobs, Encode never writes them, since zlib output differs between
// implementations), and non-canonical encodings that binary_to_term accepts
// but term_to_binary never writes (an INTEGER_EXT holding 5, old PID_EXT,
// FLOAT_EXT text, ...): those decode to the same value term_to_binary would
// and re-encode canonically.
//
// # Safety
//
// Decode never panics (it is fuzzed), rejects input nested deeper than
// MaxDepth, checks every length field against the remaining input before
// allocating, caps decompressed size, and reports errors as *DecodeError
// with the byte offset. It accepts what binary_to_term accepts and rejects
// what it rejects (NaN floats, bad UTF-8 in atoms, duplicate map keys, ...),
// with one deliberate exception: trailing bytes after the term, which
// binary_to_term ignores, are an error, because in migctl they mean
// corruption. By default decoded binaries are copies; DecodeOptions.NoCopy
// makes them alias the input instead.
//
// Encode, Compare and Equal walk Go values, which can be cyclic where
// Erlang terms cannot; Encode reports a cycle as excessive nesting, Compare
// and Equal assume acyclic input (anything Decode returns is).
//
// # Comparing and printing
//
// Equal is Erlang's =:= across the representation choices above. Compare is
// the order the VM uses for map keys. Format prints a term in Erlang syntax
// with long values cut short, for diffs and the CLI; FormatFloat prints a
// float exactly as the VM's ~p does.
//
// # Cheap access
//
// Sessions can carry megabytes of metadata. WalkMap, LookupMapKeys and Skip
// walk an encoded map without decoding values that are not asked for;
// skipping a binary costs the same whatever its size.
package term
