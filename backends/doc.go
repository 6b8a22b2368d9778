// Package backends reads and writes erlmcp's session stores on running
// Erlang nodes: one documented interface, Store, and one type per layout
// erlmcp has (ETS, DETS, Mnesia), each faithful to the module erlmcp uses:
//
//	ETS     ordered_set erlmcp_sessions_ets           rows {Id, Session}
//	DETS    set erlmcp_sessions_dets, erlmcp_sessions.dets   rows {Id, Session}
//	Mnesia  set erlmcp_session, disc_copies           rows {Tab, Id, Session, WriteTime}
//
// Names are configuration (Spec); the defaults are erlmcp's.
//
// All work runs on the node through migctl's agent (erlang/agent), so a
// batch costs one round trip and sessions cross the wire only as
// term_to_binary blobs. Those blobs are carried unchanged: a session copied
// from one store to another is byte-identical under term_to_binary, and is
// never decoded by ergo (whose decoder cannot take binary-keyed maps).
//
// Streaming is by batches with an opaque, resumable Cursor and holds neither
// the table nor the whole result in memory on either side. Cursor meaning
// per layout: ETS, the last key returned (exact and durable, the table is
// ordered); DETS and Mnesia, the table's own select continuation, valid
// while the table stays open on the node (ErrCursorExpired otherwise; start
// again). Scan is the way to read a whole live table: the node's streaming
// process fixes the table (safe_fixtable) for the whole traversal, so every
// row present throughout comes exactly once, and rows written during the
// scan may or may not come (migration code relies on dual-writes for
// those). Step-by-step Stream calls cannot hold a fixation between calls:
// under concurrent writes a DETS or Mnesia stream may repeat or miss rows.
//
// Known limit: a fixed DETS table's select traversal misses untouched rows
// while new keys are inserted (measured: 1 to 5 of 1,500 in about every
// other pass; an insert rewrites a slot's objects elsewhere in the file,
// and the traversal follows the file). Scan still reads DETS with select, so a DETS export taken
// while the application creates sessions can lack a few; export from a
// quiet table, or check it (consistency checks re-read differing keys one
// by one and are not fooled). The backfill, where it matters most, also
// lists the keys in one turn of the store server (the only writer) and
// reads by key whatever its traversal did not return, unless nothing was
// written during the pass (erlmcp_session_backend_hybrid).
//
// Checksums are computed on the node over a range of hash space (keys are
// placed by erlang:phash2(Id, 2^32)), in buckets, so that two stores can be
// compared by moving only the sums. The digest leaves out last_accessed,
// which every fetch rewrites. It is migctl's one bucket protocol
// (migctl_buckets through agentapi.Buckets; the bucket arithmetic is
// backends/bucketdiff's), the one consistency checks and cluster
// verify-replication use as well.
//
// DETS tables that the application does not have open are opened by a
// long-lived owner process of the agent, read-only unless written to, and
// never repaired: a file that needs repair is reported (ErrNeedsRepair)
// rather than rewritten. The owner closes the table when migctl leaves.
package backends
