// Package bucketdiff is the Go half of migctl's one bucket-checksum
// protocol (the node half is erlang/agent/migctl_buckets.erl): how hash
// space is cut into buckets, which buckets of two stores differ, and what
// a bisecting comparison asks next.
//
// # Model
//
// A key lives at H = erlang:phash2(Id, 2^32). A Range [Lo, Hi) cut into
// Buckets equal parts puts H in bucket (H-Lo)*Buckets div (Hi-Lo); Bucket
// gives that part back as a Span, so both sides agree on every boundary.
// A node answers many ranges in one pass over its store with one Sum per
// bucket (count, sum of 32-bit row digests mod 2^64, and for Mnesia the
// latest write time). Two buckets agree when count and sum agree.
//
// Three callers use it: consistency.Check bisects (Compare, then Next:
// split the differing buckets, or list their keys once they hold few
// rows), cluster.VerifyReplication and the heal plan compare fixed buckets
// and list the keys of the differing ones (Diff, then Spans). Nothing here
// talks to a node: the wire is erl/agentapi's Buckets stub.
package bucketdiff
