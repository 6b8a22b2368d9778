// Package probe says what the service's session processes are doing,
// from many looks at them: on each node the session store server (every
// client call goes through it), the DETS server of the session file
// (every DETS call of the node goes through it), Mnesia's transaction
// manager and migctl's change recorder.
//
// Why: when clients time out during a migration step, the question is
// which process they waited on and what it was doing instead. A single
// look says little; a few looks a second for some seconds say where each
// process spends its time. That is how the client timeouts of the 1.8M
// big runs were traced (docs/performance.md): node 1's DETS server inside
// a cleaner's select in 187 of 197 looks; node 5's store server in a
// remote Mnesia select for 5 s; a DETS server re-hashing its file after a
// backfill released it.
//
// Model: Run calls migctl_migrate:probe/3 on every node in turn-taking
// batches (at most 25 looks a call, interval apart, taken in the node, so
// that the interval is the node's and no agent call runs for long) until
// Options.Duration has passed, and aggregates per node and process: how
// many looks found it busy (not waiting, or with messages queued), its
// queue length (median, 95th percentile, largest), and where it was,
// counted by its first frame outside the generic server loops
// (gen_server, gen, proc_lib, sys); a process waiting with an empty queue
// is "idle". Reading only: nothing on the nodes changes, and no process
// is suspended or traced (erlang:process_info/2 of four processes per
// look).
package probe
