// Package cluster looks after the Mnesia cluster that holds erlmcp's
// sessions: its health, whether its replicas really agree, growing and
// shrinking it, noticing a split brain, and healing one without throwing
// away either side's writes.
//
// # Model
//
// Every answer starts from each node's OWN view, read on that node
// (migctl_cluster:view/1): whether Mnesia runs there, db_nodes (the schema:
// who belongs), running_db_nodes (who it currently replicates with), the
// session tables with storage type, size, where they are read from and
// their master nodes. Status combines the views into a verdict:
//
//   - healthy: every node reachable, Mnesia running, and every node lists
//     every other in running_db_nodes;
//   - degraded: a node is unreachable or has Mnesia stopped, and the
//     reachable ones agree;
//   - partitioned: two reachable nodes that share a schema (each is in the
//     other's db_nodes) are missing from each other's running_db_nodes.
//     Mnesia does not merge by itself after such a split; both sides keep
//     taking writes, and reconnecting the network only produces
//     inconsistent_database events.
//
// Islands are the groups of nodes that do replicate with each other
// (connected components of "A and B list each other as running").
//
// # Data, not membership
//
// Agreeing running_db_nodes do not mean agreeing data, so VerifyReplication
// checksums each node's local copy of a table, in hash buckets
// (erlang:phash2(Id, 2^32), the same placement as package backends), and
// drills into differing buckets key by key. Only the sums, then the keys of
// the differing buckets with their times and digests, cross the network.
// Each node is read at a slightly different instant, so under live writes
// copies differ for a moment: the keys found different are read again on
// both nodes (VerifyOptions.Rechecks times, RecheckDelay apart; default
// 2 × 300 ms, a few keys each, so both reads are nearly simultaneous) and
// only keys that differ every time are reported. A row changed in one
// node's local copy differs every time and is reported.
//
// # Heal
//
// Plan compares each losing island's local copy with the winner's the same
// way and decides every key that differs.
//
// Evidence. Every node runs a change recorder (migctl_recorder, in the
// migctl_node library an erlmcp release runs; evidence.go reads it): for
// each key of the session tables, the last change that node's Mnesia
// applied (write or delete, the node's time to the µs, the origin node,
// the digest of the row written), fed by Mnesia's table events, bounded by a window
// and a key cap, with its coverage (since when it has recorded without a
// gap) stated. For every differing key, Plan reads each island's latest
// recorded change (over all its nodes: a node records its whole island;
// one change is timed by its earliest record, normally the origin's,
// whose commit is reported to it before its client is answered; the other
// replicas apply it later) and the
// side whose last change is the later one wins, its row or its deletion
// alike (equal times: a row over a deletion, then the winner).
// This needs no split time and no keep window: a write in flight at the
// cut is recorded when it commits, a deletion is recorded as such. The
// records count as complete when both sides' coverage reaches back before
// the cut (the later of the data's bound and T minus the keep window, less
// 250 ms); a key neither side recorded a change of is decided by the rules
// below, and its decision says so.
//
// Without complete records (no library, a recorder or Mnesia restarted
// during the split, a split longer than the window), the plan says why
// (LoserPlan.Evidence) and decides from the rows' times: the split time T
// comes from the operator (PlanOptions.SplitAt), or else from when the
// nodes saw each other's Mnesia go down (migctl_cluster:downs/1): exactly,
// to the millisecond, when a watch's forwarder saw the mnesia_down event,
// else from Mnesia's own record (mnesia_decision, to the second). The data
// gives a lower bound (just after the latest write both sides hold
// identically); T is the mnesia_down time when it is later than that
// bound, else the bound. A node notices a cut link only after
// net_ticktime, so the plan keeps a window before T (PlanOptions.KeepWindow,
// by default 1.25 × the largest net_ticktime + 2 s, starting no earlier
// than the data's bound) inside which a row present on one side only is
// kept (LoserPlan.KeptNearSplit). For a key K, with the window starting at W:
//
//   - on both sides with different values: the newer last_accessed wins;
//   - only on side X, written on X before W: the other side deleted it
//     during the split, and that deletion wins;
//   - only on side X, written on X between W and T: kept (a deletion the
//     other side made during the split comes back);
//   - only on side X, written on X after T: a write of the split, kept.
//
// The winner is the largest island, then the one with the most recent
// writes, or the operator's choice; the reason is part of the plan. A plan
// written with `--plan -o json` can be carried out exactly
// (`--execute --plan-file`, ReadPlan and Plan.Matches: refused when the
// islands changed).
//
// Execute runs the steps of one table (healSteps: name, what it will do,
// what it does; --stop-after is checked against it). It backs up the
// losing nodes' tables to export files (package backends/exportfile),
// reads the losing side's changes out of its own copy as they are then
// (traffic keeps flowing on both sides: the comparison is made again with
// the plan's winner, split time and keep window), reconnects every pair of
// nodes, then fences the losers: on every losing node dirty writers (the
// hybrid backend's dual-write phases) are told to take locks
// (migctl_cluster:fence_flag/1), and a write lock on the session tables is
// taken in each losing island (migctl_cluster:fence/3), so erlmcp's
// writers there wait from that moment until the losers' Mnesia stops; the
// losers' changes are read a last time under it (a loser whose Mnesia
// someone else stopped since its changes were read is refused,
// ErrLoserStopped, before anything is merged: what it acknowledged
// meanwhile is only in its Mnesia directory). It backs up the winner's
// rows the merge will overwrite or delete, merges the losers' changes into
// the winners in transactions that re-check every decision against the
// winner as it is at that moment (the conditional merge, below), and only
// then makes the losers take the winners' (merged) data without
// restarting their Erlang nodes: the losers that hold no fence stop first,
// then each fence holder right after a check that its lock is still held
// (ErrFenceLost otherwise: nothing discarded, resume), master nodes,
// Mnesia stop, then start (one loser at a time: started together under
// traffic, the first up kept writing without the other among its
// replicas), wait_for_tables, master nodes cleared; a process that was
// starting a transaction when Mnesia stopped waits for ever on the stopped
// transaction manager (erlmcp's store server would then answer nobody),
// so the reload ends such waits (migctl_cluster:free_tm_waiters/0: the
// transaction returns node_not_running). It waits until
// running_db_nodes agree and every node writes to every replica, and
// verifies the replicas; writes a loser took
// while it rejoined can reach some replicas and not others, so replicas
// that differ are repaired (repairReplicas: each key rewritten, or
// deleted, from the copy whose own record accounts for it and whose change
// is the latest, each timed by its origin's record; no such copy: the copy
// most nodes share) and verified
// again. HealReport.LongestFence says how long the losers' clients could
// have waited. Every step is journaled, with the plan and the backups in a
// state record: Resume continues an interrupted heal; until the losers
// have begun to reload it checks the islands again and fences, reads and
// merges again (with evidence nothing applies twice: merged keys no longer
// differ, and the merge's conditions hold); after, it finishes the reload
// of the losers the interrupted run stopped (finishInterruptedReload).
// ListHeals shows heals and their backups, and RestoreBackup writes a
// backup back (if_newer by default). The journal is bound to the schema
// cookie, the same identity
// package migrate uses.
//
// Conditional merge. The winners' clients are never held: between the
// last read of the evidence and the merge they keep changing keys, and a
// change they make after a decision for the loser's side is later than the
// loser's change, so by the same rule it must win. A decision on evidence
// therefore carries what it saw on the winner: the row's digest (0 when
// absent) and the merge node's own record of the key (Decision.WinnerSeen
// and WinnerSeenUs, the time of the last change its recorder had, compared
// to the µs; that node records its whole island). In the merge's transaction, under the table write lock
// (every commit before it is then applied on the merge node, after one
// system call that waits for its transaction manager, and reported to the
// recorder),
// migctl_cluster:merge/3 applies the decision only if the row is unchanged
// and the recorder has no later change of the key; the digest alone would
// miss a delete of a row the winner did not hold, or a write and a delete
// that leave it absent again. Otherwise the winner's change stands and the
// key is counted as changed on the winner during the heal
// (MergeResult.WinnerChanged and WinnerChangedIDs, the merge step's
// detail). A resume decides again from fresh reads, so the conditions of
// an interrupted merge are those of the new decisions. Decisions without
// evidence re-check by last_accessed and write time.
//
// When a loser's Mnesia is wedged, ExecuteOptions.OutOfBand (package
// cluster/sshrun: the operator's commands over SSH, host keys checked
// against known_hosts) stops the node, moves its Mnesia directory aside and
// starts it; it then rejoins from the winners (extra_db_nodes, schema and
// table copies), which already hold the merged changes. A loser migctl
// cannot read at all can still be healed this way when it is named in
// PlanOptions.OutOfBand: the plan lists it as an unreachable losing island
// without evidence, and its writes since the split are not merged but stay
// in its moved-aside Mnesia directory, as the plan says.
//
// Tested with load generators on every node throughout (never paused):
// 3-node 2|1 and 5-node 3|2 splits, also with every node's clients on the
// same sessions (checked by package history), the hybrid backend in
// phase2 at 50 %,
// a heal SIGKILLed after each step and resumed, a split during a backfill;
// every acknowledged operation kept, nothing deleted brought back.
//
// Known limits: changes on two sides of a split closer together than the
// recorders' scheduling lag are concurrent and ordered by the recorders'
// clocks (which must be synchronised). Without records the rules above
// keep a key written on one side and deleted on the other during the split,
// and a write whose commit reordered against its timestamp can be taken
// for a deletion.
//
// migctl's own clock is never compared with the nodes': the last read under
// the fence asks each loser what its recorder saw since the node's own
// time at the previous read (migctl_cluster:clock/0), and the fence's flag
// runs for a duration by the node's clock. migctl may run on a host whose
// clock is off, and an Erlang node's system time does not follow a step of
// its host's clock after it booted (the default no_time_warp mode): with
// migctl's time, a loser behind it answered "nothing changed" and the
// writes its clients made between the two reads were discarded by the
// reload (most likely what one CI run met; TestHealUnderLoadClockSkew runs
// the nodes 5 s behind). read-changes says when a loser's clock is more
// than 250 ms from migctl's.
//
// # Watch
//
// Watch starts a forwarder process on every node (migctl_cluster:forwarder/2)
// that passes Mnesia system events and nodeup/nodedown to migctl's own pid,
// monitors migctl so it exits when migctl goes away, and resubscribes after
// Mnesia restarts. Any event triggers an immediate comparison of all
// views; a timer does the same regardless, since events are lost while
// migctl is not connected.
package cluster
