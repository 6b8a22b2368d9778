// Package benchkit is the bench kit: code that measures, damages or floods
// stores and clusters for benchmarks (`make bench`, `make bench-scale`)
// and for the tests that prove a figure. It reaches into nodes the way a
// benchmark needs to (clearing tables, native reference loops) and is
// never imported by shipped code: the CLI, the daemon and the library
// packages (migrate, consistency, cluster, ...) must not depend on it.
//
// One file per area: migrate.go (the backfill against its native in-node
// copy, the hybrid backend's latency, phase changes under load),
// consistency.go (the consistency benches). Each function returns the
// measured numbers, migctl's next to the native reference's from the same
// run, for a harness to print; none sets anything up: the cluster, its
// data and its load are the caller's.
package benchkit
