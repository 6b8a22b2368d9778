// Package history judges what the clients of a load run saw, independently
// of the load generator's own bookkeeping.
//
// # Model
//
// The fixture's load generator (erlmcp_loadgen, start option history =>
// true) records every operation a client issued: the node and worker that
// issued it, the session id (the key), store / fetch / delete, a digest of
// the value written or read (erlang:phash2 of the session without
// last_accessed), the call and return times, and the outcome (ok,
// not_found, error, timeout). Each node hands its history over as one
// term_to_binary blob (erlmcp_loadgen:history/1,2); Decode reads one, Merge
// puts several nodes' together.
//
// Times: the nodes record erlang:monotonic_time(nanosecond), which is not
// comparable between nodes, and their erlang:time_offset; Decode adds the
// offset, so every Op's Call and Return are the node's Erlang system time
// in nanoseconds. In OTP's default no_time_warp mode that is the OS clock
// read once at the node's boot plus monotonic time: on one host (the tests,
// the demo) the nodes agree to well under a millisecond. Decode refuses a
// history from a node in multi_time_warp mode, whose offset moves.
//
// Each session is a register: a store writes its value's digest, a delete
// writes "absent", a fetch reads a digest or "absent" (not_found). Check
// partitions the history by key and checks each key with porcupine
// (github.com/anishathalye/porcupine), the linearizability checker etcd's
// robustness tests use. An operation that failed (error, timeout) may or may
// not have happened: a failed store or delete is given a return time at the
// end of the history (porcupine may place it anywhere after its call, or in
// effect never, since a write placed last changes nothing any read saw);
// a failed fetch tells nothing and is left out.
//
// # Splits
//
// While a Mnesia cluster is split each side takes writes, so the history is
// not linearizable there and is not judged: Options.Splits gives each split
// window, from just before the cut to the end of the heal. Operations
// inside a window are counted and reported. Around each window:
//
//   - before it, the key's history (reads that returned before the cut,
//     writes called before it) is linearizable as usual;
//   - at the end of the heal every key holds a value the heal's documented
//     rule can choose (docs/split-brain.md, "the later change wins, a row
//     or a deletion alike"): among all changes called before the heal
//     ended, acknowledged or maybe, a change is a candidate unless an
//     acknowledged change of the key was called after it returned (that
//     one is definitely the later change). A fetch that found the session
//     is a change too: erlmcp's backends rewrite the row (last_accessed) in
//     the fetch's transaction, and the heal counts that write, so a read
//     on one side after an update on the other keeps the read's (older)
//     value; Splits count such keys (KeptByTouch). "Absent" is a candidate
//     only through a delete that is, or, before any acknowledged change,
//     as the initial state. A value no client wrote is never a candidate;
//   - after it, the key's history is linearizable starting from any one of
//     those candidates (a register with a set of possible initial values).
//
// The load generator can end a history with a direct read of every key in
// the store (history/2 with final), so a key nobody touched after the heal
// is still judged.
//
// # Reports
//
// Result says how many operations and keys were judged and which keys
// failed; each Failure has the key's operations in time order, a diagnosis
// of the first read that no plausible value explains (a stale read, a lost
// write, a resurrected delete, a value nobody wrote), and the path of
// porcupine's HTML visualization when Options.VisualizeDir is set.
//
// Caveats: the digest is 32 bits, so two different values of one key
// collide with a probability of about n²/2³³ for n values of that key;
// the split window must enclose the whole heal (take its end after the
// heal returned); porcupine's search is exponential in the worst case, so
// each key's check has a time limit and a key it could not decide is
// reported as Unknown, which Result.OK counts as a failure.
package history
