// Package migrate moves erlmcp's session store from one backend to another
// while the service runs: ETS → DETS on one node, DETS → Mnesia on a
// cluster. It drives the hybrid session backend
// (erlang/app/src/erlmcp_session_backend_hybrid.erl) through its phases:
//
//	phase0  primary only
//	phase1  dual-write, read the primary
//	phase2  dual-write, read the secondary for Percent % of the sessions
//	        (erlang:phash2(Id, 100) < Percent, stable per id)
//	phase3  secondary only
//
// # Where the phase lives
//
// On a Mnesia cluster the phase is one row of the replicated table
// migctl_migration ({phase, {Phase, Percent, Epoch, Fallback}}, disc_copies on the
// cluster's nodes). The hybrid reads it from the local replica on every
// operation, so SetPhase commits with ONE Mnesia transaction that switches
// every node at once (all or none by construction), a restarted node keeps
// it, and a node that joins later reads the cluster's phase, not the stale
// one in its config file (the configured migration_phase is only used when
// nothing is recorded yet). Without Mnesia (ETS → DETS on one node) the
// phase is a DETS file migctl_migration.dets next to the data, cached in
// persistent_term; SetPhase then commits node by node and reverts the nodes
// already switched if one fails. Epoch is a compare-and-set guard: a change
// planned against epoch E is refused if someone else changed the phase.
//
// # Backfill without races
//
// A backfill batch does not read the source from outside and write the
// target: it is a message to the store server, which runs it between two
// application operations (see the hybrid's handle_info/2). Reading the
// source and conditionally writing the target therefore happen with no
// application write or delete of that node in between: a newer value is
// never overwritten (the target is written only when absent, or when the
// source's last_accessed is later), and a session deleted during the
// backfill is gone from the source before the batch that would copy it
// reads it, so it is not resurrected. Mnesia targets are written in one
// transaction per batch under a table write lock, which also orders the
// batch against writes arriving through other nodes. Progress is kept as a
// cursor per node in migctl's journal, so a backfill killed at any point
// resumes where it stopped (batches are idempotent), unless the phase
// epoch changed since the pass began: writes made meanwhile (phase0, say)
// may have reached one store only, so the pass starts over. Expired sessions are
// skipped. The pace is limited (rows/s) and paused by Throttle, one pure
// function over samples that background collectors read from every node
// (scheduler utilisation, the store server's and Mnesia's message queues,
// mnesia_overload events). A batch that does not get its turn within
// StepTimeout (the store server stalled: erlmcp's own cleanup of a 1.8 GB
// DETS file held it 18-33 s at a time in the big run) is tried again from the same
// cursor, up to StepRetries times in a row with growing pauses; the
// batches of the same call that did finish are kept. Trying again is safe
// because batches are idempotent, and a late batch the server still runs
// writes only what is newer. Nor does a batch wait in the store server for
// the Mnesia table's lock while another transaction holds locks on it
// (erlmcp's cleanup of many sessions expiring together holds row locks on
// every node for minutes): it gives up after two restarts, and migctl
// tries it again after a pause (ConflictRetries).
//
// Replicas. A Mnesia commit is applied on every replica of the table, so
// a backfill into a table of five disc_copies replicas does five times
// the work of one. With ReplicateAfter (phase1 only: the application
// reads the old store) the backfill removes every replica but one,
// copies into it, and adds the others back with mnesia:add_table_copy,
// Mnesia's bulk table copy, which keeps a new replica in step with the
// commits made during the copy. The removed replicas are journaled first;
// until they are back the phase2 gate refuses, and the next backfill adds
// them back (replicas.go). While a replica writes the table to its disc,
// Mnesia holds every write to the table; in phase1 the hybrid does not
// make the application wait for it (its writes to the new store are
// deferred, in order, and the phase2 gate dual_writes_applied waits until
// they are applied).
//
// Two details make that hold under load. A DETS traversal that is not
// fixed can miss rows when the table grows, and a fixed one (the store
// server fixes it for the pass) returns rows as they were at the fixation
// (measured: 89 of 4,898 rows deleted meanwhile came back); so the hybrid
// records every id the application touches while a pass runs, and a batch
// reads those ids again before copying. A traversal that follows the file
// also misses rows whose slot the application rewrote meanwhile (DETS
// moves a slot's objects when one of them is written); the slot of every
// touched id is read again at the end of the pass, a batch at a time (the
// rule and its fallback: the hybrid's leftovers/3).
//
// A batch holds its store server: every application call of that node
// waits for it. The node sizes batches (migctl_migrate:backfill_steps/9):
// while application requests queue behind a batch, the next one is sized
// to take BackfillOptions.TurnBudget (25 ms) at the rate just measured;
// when none did, batches double up to BatchSize, so a quiet node copies in
// large transactions. And in the dual-write phases the
// hybrid writes a Mnesia side with sync_dirty (it returns once every replica
// applied it: ~0.3 ms here) rather than one transaction per operation
// (~3 ms on three disc replicas here, which capped a store server at a few
// hundred operations per second); per session the order of writes is the
// order of its node's store server.
//
// Limitation: with one DETS file per node (DETS → Mnesia on a cluster), a
// session must be served by one node, as erlmcp with DETS does; a delete
// made through node B of a session node A also holds in its own DETS file
// is invisible to A's backfill. And a reverse backfill copies every Mnesia
// session into every node's DETS file (which node served a session is not
// recorded), so after a rollback the old files hold more than before.
//
// # Rollback
//
// Rollback goes one phase back. From phase3 it first switches to phase2 at
// 100 % (writes go to both stores again, reads stay on the new one, so
// nothing written after the cut-over can be missed by a reader) and then
// runs a reverse backfill new → old (copy plus pruning the deletes made in
// phase3) while dual-writes flow; going on to phase1 is refused until that
// reverse backfill completed. That phase2 runs without phase2's usual
// fallback to the old store after a miss: the old store still holds what
// phase3 deleted, and falling back would serve it and copy it back (the
// zero-loss test caught exactly that). SetPhase to phase2 from phase3 (or
// while that reverse backfill is pending) keeps the fallback off the same
// way, and below 100 % (reads of the old store) it is refused by the gate
// reverse_backfill_complete.
//
// # Setup
//
// Before the hybrid starts on a cluster, create the schema and the tables
// (CreateSchema, CreateTables: disc_copies on every node), otherwise
// erlmcp_session_mnesia creates the session table on the first node alone.
// After the cut-over, ArchiveDETS keeps the old files (tar.gz + sha256
// manifest, verified after writing), and for ETS → DETS VerifyPersistence
// restarts a node and checks that every session no client touched meanwhile
// is back unchanged (the hybrid's persistence watch records the touched
// ids in a file the restart keeps, so it works under live traffic; without
// the hybrid it compares the whole store's count and checksum, quiet).
//
// # Gates
//
// phase1 → phase2 needs a complete forward backfill of every node journaled
// after the last switch to phase1 (the consistency check of issue 4 is to
// be added as a second gate). phase2 → phase3 needs phase2 at 100 % and a
// read-error rate (read errors / secondary reads since phase2 began, from
// the nodes' counters or from Prometheus) under 0.01 %. Force overrides a
// gate and is journaled.
//
// # Journal and crashes
//
// Every change is appended to the journal before it is made (state
// "planned"), and updated after (committed, reverted, failed). The change
// in flight is also kept under state "migrate"/"pending": a migctl killed in
// the middle finds it at its next start (Recover, called by every changing
// method) and finishes or reverts it by looking at what the nodes report
// (phase, percentage and fallback; in Mnesia mode also the epoch).
//
// # Partitions
//
// In Mnesia mode a change is refused (ErrPartitioned) while package
// cluster reports the Mnesia cluster partitioned: the phase row would
// change on one island only, and the heal would later keep one island's
// row. Heal first.
package migrate
