// Package erl is migctl's connection to running Erlang/OTP nodes.
//
// A Client is one hidden Erlang distribution node inside the migctl process
// (ergo v1.999.224 underneath). It only connects out: its registrar resolves
// node names through the remote host's EPMD and registers nothing, and its
// handshake clears the "published" flag so that the Erlang side lists it in
// nodes(hidden), the way remote shells and erl -hidden join.
//
// The settings below are not tunables; each one prevents a failure that was
// measured against OTP 25 (see shared/docs/erlang-from-go.md):
//
//   - handshake version 6 (OTP 25 refuses ergo's default version 5);
//   - one protocol handler per connection (more reorder messages and race on
//     the atom cache);
//   - a large mailbox drained by one goroutine that hands replies to waiting
//     callers (ergo's default mailbox of 100 drops messages silently), and a
//     bound on calls in flight so the mailbox can never fill;
//   - calls waiting on a node are failed the moment that node goes down
//     (ergo leaves them waiting for their whole timeout); "down" comes from
//     ergo's network event, never from node monitors, whose down path
//     deletes from a map under a read lock and races when two connections
//     drop at once (TestManyNodesDownAtOnce catches it under -race);
//   - one Client per OS process (ergo keeps package-level state).
//
// Remote work is done three ways, cheapest to install first:
//
//   - Call: an exported function through the node's rex server, exactly what
//     rpc:call/4 sends ({call, M, F, Args, user});
//   - Eval: an Erlang expression that is scanned and parsed once on the node,
//     cached here as an abstract form and evaluated with erl_eval on later
//     calls; bodies are wrapped in a fun so that the bindings are not echoed;
//   - the agent: migctl's own compiled modules (package erlang/agent), pushed
//     with code:load_binary only after an md5 check and a soft purge that
//     must succeed, and unloaded again when the Client closes.
//
// User data never crosses the wire as decoded terms: ergo's decoder panics
// on maps with binary keys (every erlmcp session has one) and drops the
// connection. Sessions travel as term_to_binary blobs inside binaries, and
// the agent catches every exception and returns a formatted reason, so even
// an error cannot carry a session map back.
//
// The cookie is held only in memory; it is never logged and never appears in
// an error.
package erl
