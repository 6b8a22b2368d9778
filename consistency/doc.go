// Package consistency proves that two session stores agree, repairs them
// when they do not, and watches them for weeks (the runbook's phase1
// monitor). It is the library behind `migctl consistency check | repair |
// undo-repair | monitor | history`.
//
// # Model
//
// A check compares a source and a target backends.Store (any pair of ETS,
// DETS and Mnesia, on any nodes) and returns a Report after vitess vdiff's:
// processed, matching, mismatched, missing in target, extra in target,
// expired (skipped), rechecked, bytes moved over the network, round trips,
// duration per phase, and at most Options.MaxSamples sample rows per kind
// with a short readable diff (session.Diff).
//
// Checksums, not rows. Keys are placed in hash space by
// H = erlang:phash2(Id, 2^32). A full check asks each node, in parallel,
// for the checksums (row count and the sum of a 32-bit digest per row) of
// equal buckets of that space (about Options.BucketRows rows a bucket),
// computed where the data lives by the agent module migctl_buckets in ONE
// pass over the table for all buckets (the protocol backends' checksums
// and cluster verify-replication use too; the bucket bounds and the
// bisection's choices are package backends/bucketdiff's). Only the sums
// (12 bytes a bucket)
// cross the network. Buckets whose sums agree are done. Buckets that differ
// are split again (Options.SplitFactor sub-buckets each, all of a round in
// one pass) until they hold at most Options.ListRows rows, and then both
// sides list {Id, digest, last_accessed} for those ranges only; only ids
// whose entries differ are read as sessions (term_to_binary blobs) and
// compared field by field. When the stores agree a full check is one pass
// per side and moves about 0.2 bytes per session (~0.04 % of the data).
//
// Sampling (Options.Sample = N) draws about N sessions uniformly at random
// over the union of both stores' keys, never the first N, in one of three
// ways (Options.SampleMethod):
//
//   - hash-ranges: the hash space is cut into strata and in each a subrange
//     at a random offset is taken, the subranges together covering N/rows
//     of the space; both sides list {Id, digest, last_accessed} in them.
//     Key hashes are uniform, so every session of either store has the
//     same chance. Costs one pass over each table.
//   - slots: each side draws, on its node in one call, every hash slot of
//     its table with the same probability N/rows and lists the rows in
//     them; then each side is asked, one call per batch of 5,000, about
//     the other's draw (the source: which of the target's ids it holds;
//     the target: its digests of the source's ids). A session on both
//     sides counts only when the source drew it, so the sample is exactly
//     uniform over the union. No scan: the cost grows with N, not with the
//     table; a DETS file is read directly on its node (checked slot by
//     slot, through its server when that fails). slots-lookup is its
//     former name and still accepted.
//   - dets-slots, when one side is a single DETS file (detsslots.go):
//     random slots of that file are read and the other side lists its
//     sessions whose keys fall in the same slots, computing DETS's slot
//     function (a function of the key's phash2 and the file's slot count)
//     in one pass over its keys. Exactly uniform over the union; costs a
//     pass over the other side. Otherwise as slots. (Formerly slots named
//     this method, and slots-lookup the one above.)
//
// The default (auto) takes hash-ranges up to 16 × N rows and slots above.
//
// # THE COMPARISON RULE
//
// Two copies of a session (same id, one per store) agree when:
//
//   - exactly equal: id, created_at, timeout_ms (including `infinity`),
//     metadata (every key and value, nested maps included) and any other
//     key of the session map. Terms are compared, not bytes (session.Equal):
//     a compressed encoding or another node's key order is no difference.
//   - equal within a tolerance: last_accessed, which every fetch rewrites,
//     so during dual-write it drifts between the stores. Copies agree when
//     |Δ last_accessed| ≤ Rule.LastAccessedTolerance (default: twice
//     erlmcp's cleanup interval, 2 minutes). A bigger gap is a lost touch
//     and is reported as mismatched, because the lagging store would
//     expire the session early. On the nodes, the digest includes
//     last_accessed div tolerance, so any gap of a tolerance or more always
//     changes a bucket's sum; smaller gaps may change it too (a quantum
//     boundary between them) and are then cleared row by row.
//     A negative tolerance ignores last_accessed altogether (for phase1 when
//     reads touch the old store only and nothing mirrors the touch).
//   - ignored: the Mnesia record's own last_accessed field (the fourth
//     element of {Tab, Id, Session, WriteTime}: erlmcp and migctl put the
//     write time there, not the session's last_accessed) and the record
//     tag; only the session map counts.
//
// Expired sessions are skipped (counted in Expired): a session is expired
// when its NEWEST copy is (erlmcp's rule, Now − last_accessed > timeout_ms,
// widened by Rule.ExpiryGrace, 5 s; Now is the source node's clock, not
// migctl's, which may be off: judged by a migctl clock ahead of the node's,
// a lost session near its expiry was counted as expired, and a loss
// hidden), because each store deletes expired
// sessions on its own timer, so for up to a minute one may still hold what
// the other has dropped. An older copy that expired while the newer did not
// is not skipped: that is a lost touch.
//
// In-flight writes: the two sides are read at slightly different moments
// while the service keeps writing. Every difference is therefore read
// again after Options.RecheckDelay (default 2 s, Options.Rechecks times,
// default 2) and reported only if it still differs then; a write that
// reached one store and is on its way to the other settles in between.
// Rechecked counts the sessions read again. A lost or different write does
// not settle and is always reported. A session the application rewrites
// faster than the rechecks can differ on every read without anything
// lost: the older copy is then a different (newer) one at each read.
// Such a difference is read up to Rechecks more times, and if its older
// copy still moved at the last read it is counted as Unsettled (samples
// "unsettled"; a monitor's incremental cycle carries it to its next
// cycle instead), not as a difference; one whose older copy stayed the same
// while the newer changed is a copy that stopped receiving writes, and is
// reported.
//
// Keys in flight (full check): under live traffic a key written while the
// rounds run makes its bucket differ between the two sides' reads, so
// buckets holding hot keys would be split down to rows round after round.
// When one store is a Mnesia table and every node that computes sums runs
// the change recorder (migctl_recorder) covering that table, the check
// takes SinceMs = its start on the Mnesia node's clock minus
// Options.InFlightMargin (5 s; see inFlightSince for why), and every sums
// and listing pass on both sides leaves out the rows whose key the node's
// own recorder lists as changed since SinceMs (migctl_buckets' option
// exclude_changed; each side's set is taken when its pass starts, so a key
// first written during a pass can still make its bucket differ: differing
// buckets are therefore summed once more, when the new sets hold it, before
// they are listed or split). After the rounds, each node lists the keys its
// recorder has as changed since SinceMs with its store's digests, zlib-
// compressed (migctl_buckets:changed_rows); the union of those keys (all
// that any pass left out) is compared like listed rows: digests, then the
// sessions of those that differ, then the rechecks, so a real difference
// on such a key is still reported. With a DETS source and a Mnesia
// target, each source node reads a key's DETS row and its local Mnesia
// row back to back in one call (changed_rows/4; Report.InFlight.
// ReadTogether): hot keys read in one call per side were seconds apart and
// mostly differed for that alone (8,032 of 14,441 at 1.8M sessions under
// 1,000 ops/s; read together at 300k, 46 suspects remained and the whole
// sessions fetched fell from 7.7 MB to 39 KB). A node whose recorder is not
// running or does not reach back to SinceMs makes the check compare every
// row in the buckets instead, as do more than a sixteenth of the rows
// changed since SinceMs (a check right after a copy: reading them by key
// would cost more) and Options.NoInFlightExclusion;
// Report.InFlight says which, and how many keys were read by key
// (Report.BytesByCall splits the bytes by node-side call). A
// session changed after its bucket agreed is counted twice in Processed
// (in its bucket and by key).
//
// One read of each store (full check with keys in flight left out): each
// store's node keeps, from the first round's pass, each row's id and
// digest (migctl_pass; about 125 bytes a row, 224 MB at 1.8M sessions,
// dropped at the end of the check or after ten idle minutes; kept only
// when it fits in a quarter of the memory the node can still take, the
// lower of MemAvailable and its cgroup's limit less usage, else the later
// rounds read the store again), and answers
// the later rounds and the listing from them, less the keys its recorder
// now has as changed, instead of reading the store again; the listing
// reads the current rows of its ids by key. Sound because every key
// changed since SinceMs, which is before the first pass began, is left
// out of those passes on both sides and verified by key
// (InFlight.KeptPasses counts the passes so answered). At 1.8M sessions
// under 1,000 ops/s each later pass had cost as long as the first: 55-76 s
// for the DETS file, 12-13 s for the Mnesia copy.
//
// Limits: a row's digest is 32 bits and a bucket's sum is their sum mod
// 2^64 plus the count, so two different bucket contents collide with a
// probability of about 2^-32 per differing bucket. Each round of a full
// check is one pass over each table (DETS and ETS have no index by hash),
// but for a check that leaves keys in flight out (above).
// A hash-ranges sample is one pass over each table too, a dets-slots sample
// one pass over the side that is not the DETS file, and a slots sample
// none (its cost grows with N).
//
// # Repair
//
// Repair runs a check and turns every difference into an action: the newer
// copy goes to the side that lacks the session or holds an older copy
// (put modes if_absent / if_newer, decided on the node at write time, so a
// write the service makes meanwhile wins); equal last_accessed with
// different content: the source wins. Sessions only in the target are
// copied to the source, or deleted from the target with DeleteExtra;
// nothing else is ever deleted. Before writing, every value about to be
// overwritten or deleted (and every absence about to be filled) is saved in
// the journal, so UndoRepair(run) restores it; undo leaves alone a session
// the service changed after the repair (a conflict) unless Force.
//
// # Monitor
//
// Monitor is the daemon's loop: Open / Run / Close, a check every interval
// (sampled by default), metrics on its own Prometheus registry
// (migctl_consistency_*), Health for /healthz, a log line and a
// MismatchAlert (OnMismatch; MismatchAlert.Alertmanager is the alert in
// Alertmanager's format) for every NEW mismatch (never twice: the
// mismatches already alerted on are kept in the journal), its history and
// state in the journal (a restart continues; the duration counts from the
// first start; check records older than MonitorConfig.Retention, 30 days
// by default, are deleted as it goes, so a journal stops growing). It
// bounds its load: calls to the nodes are paced
// (CallsPerSecond), a check is postponed with exponential back-off when a
// node's run queue is long or a check failed. It serves nothing itself:
// `migctl consistency monitor` serves the registry (package
// metricsserver) and posts the alerts (package alerting). deploy/ holds the alert
// rules, a Grafana dashboard and a systemd unit.
package consistency
