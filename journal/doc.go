// Package journal is migctl's durable record, a bbolt file: every phase
// change (who, when, from, to, nodes, reason, gates and their values,
// result), backfill checkpoints, consistency runs, repairs (with the values
// they overwrote, so they can be undone), heals and the backups they made.
//
// Model: an append-only list of Entries (sequence number, time, kind, who,
// reason, a JSON body that the owning package defines), plus named state
// buckets for things that are overwritten in place (checkpoints, the
// operation in progress) and for blobs (saved session values).
//
// The file is opened for each operation and closed right after, so a
// monitor daemon that runs for two weeks, an operator's `migctl journal`
// and a backfill can share one journal; bbolt's file lock serialises them
// (an operation waits up to Options.LockTimeout for another to finish).
//
// A journal belongs to one cluster: Bind records the cluster's identity on
// first use and refuses another cluster's journal afterwards, so that a
// checkpoint or an unfinished phase change is never applied to the wrong
// cluster.
package journal
