// Package testkit starts real Erlang/OTP nodes for migctl's tests: N nodes
// with unique names on 127.0.0.1, their own cookie and temporary
// directories, a Mnesia cluster built on them, partitions and reconnects,
// and a teardown that always runs, also when a test fails.
//
// A test binary that uses it must run through testkit.Main from TestMain:
// it starts one EPMD of its own on a free port (so it never touches a
// system EPMD), generates the binary's cookie, and creates the single
// erl.Client that the process may have (ergo allows one node per process).
// Every OS process testkit starts is started with a parent-death signal
// and stopped by pid in cleanup; Main checks at the end that none is left.
package testkit
