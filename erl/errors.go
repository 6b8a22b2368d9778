package erl

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that concerns a node
// wraps one of them, so callers can test with errors.Is and the CLI can map
// them to exit codes.
var (
	// ErrBadNodeName: the node name is not name@host.
	ErrBadNodeName = errors.New("invalid node name")
	// ErrHostNotFound: the host part of the node name does not resolve.
	ErrHostNotFound = errors.New("host does not resolve")
	// ErrEPMDUnreachable: nothing answers on the EPMD port of the host.
	ErrEPMDUnreachable = errors.New("epmd unreachable")
	// ErrNotRegistered: EPMD on the host does not know the node.
	ErrNotRegistered = errors.New("node not registered with epmd")
	// ErrBadCookie: the node closed the handshake after our digest.
	ErrBadCookie = errors.New("cookie rejected")
	// ErrUnreachable: the node is registered but could not be connected.
	ErrUnreachable = errors.New("node unreachable")
	// ErrNodeDown: the connection to the node went down while a call waited.
	ErrNodeDown = errors.New("node went down")
	// ErrTimeout: the call did not finish within its deadline.
	ErrTimeout = errors.New("timed out")
	// ErrBadRPC: the remote function raised or the call was refused there.
	ErrBadRPC = errors.New("remote call failed")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client closed")
	// ErrNoCookie: no cookie could be found.
	ErrNoCookie = errors.New("no Erlang cookie")
)

// Error is a failure concerning one node, with a hint an operator can act on.
type Error struct {
	Op   string // what migctl was doing: "connect", "call mnesia:info/0"
	Node string // the remote node
	Err  error  // one of the sentinels, possibly wrapping a cause
	Hint string // what to check; never contains the cookie
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %v", e.Op, e.Node, e.Err)
	if e.Hint != "" {
		s += " (hint: " + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// RPCError is a remote exception or badrpc reason, already formatted as text
// on the node (so no user data is decoded on our side).
type RPCError struct {
	Class  string // error, exit, throw, badrpc
	Reason string
}

func (e *RPCError) Error() string { return e.Class + ": " + e.Reason }
func (e *RPCError) Unwrap() error { return ErrBadRPC }
