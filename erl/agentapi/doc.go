// Package agentapi is the one seam between migctl's Go code and the agent
// modules it pushes onto erlmcp's nodes (erlang/agent/*.erl).
//
// # Model
//
// Each agent module has a stub here that owns its request and reply
// shapes: Agent (agent.go, store.go, repair.go) for migctl_agent, Check
// (check.go) and Sample (sample.go) for migctl_check, Buckets (buckets.go) for the
// one bucket protocol, Cluster (cluster.go, clusterstatus.go, recorder.go)
// for migctl_cluster, Migrate (migrate.go, migratestatus.go) for
// migctl_migrate, Incr (incr.go) for migctl_incr, and Node and Mnesia for
// the few plain OTP calls (load, release, is_running). A stub is a small
// value type holding the client
// (`agentapi.Check{C: c}`); its methods take and return Go types
// (`Sums(ctx, node, store, ranges) ([]BucketSum, error)`), build the
// Erlang terms, call the module through erl.Client.Agent, and decode the
// reply. Nothing outside package erl and this package imports ergo's etf:
// the tuple contracts are written down once, here, next to the decode, and
// a wrong shape is an error that names the function (ErrReplyShape), not a
// panic or a silent zero in the caller.
//
// # Rules the agent modules follow (and the stubs rely on)
//
//   - Every exported agent function catches everything and returns
//     {ok, ...} or {error, Reason}; erl.Client.Agent turns the latter into
//     an *erl.RPCError whose Reason callers map to their own sentinels.
//   - Session data never crosses as decoded terms: rows travel as
//     term_to_binary blobs inside binaries (ergo's decoder panics on maps
//     with binary keys).
//   - ergo decodes true/false as Go bools and integers as int or int64:
//     read them with the helpers in reply.go, never with a type assertion.
//
// # Adding an agent function
//
// Write the Erlang function (with a comment giving its reply shape), run
// `make agent`, then add one method to that module's stub here, with the
// same shape in its doc comment and a decode that checks arity.
package agentapi
