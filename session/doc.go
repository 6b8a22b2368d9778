// Package session reads erlmcp session values: the Erlang maps
//
//	#{id => binary(), created_at => Ms, last_accessed => Ms,
//	  timeout_ms => Ms | infinity, metadata => map()}
//
// that erlmcp's ETS, DETS and Mnesia backends store, as term_to_binary
// blobs. migctl copies sessions as their original bytes and only looks
// inside them to decide things: is this table really a session table
// (Parse), may this session be skipped (Expired), which copy of a session
// is the more recent one (Newer), and do two stores agree (Equal).
//
// Agreement needs care because erlmcp rewrites a session on every fetch
// with a new last_accessed, and each backend deletes expired sessions on
// its own timer. Equal therefore compares every field exactly except
// last_accessed, which may differ by a configurable slack, and it compares
// terms rather than bytes: the same session can legitimately be encoded
// differently by two nodes (compression, or a metadata map of more than 32
// keys, whose byte order depends on the node; see package term).
//
// Generate builds realistic session blobs for tests and benchmarks.
package session
