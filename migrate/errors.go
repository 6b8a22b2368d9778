package migrate

import (
	"errors"

	"github.com/erlmcp/migctl/erl"
)

// Sentinel errors; the CLI maps them to exit codes.
var (
	// ErrUnknownPhase: not phase0..phase3.
	ErrUnknownPhase = errors.New("unknown phase")
	// ErrSkipPhase: the change skips a phase and Force was not given.
	ErrSkipPhase = errors.New("change skips a phase")
	// ErrNodeDown: a node of the cluster does not answer.
	ErrNodeDown = errors.New("node down")
	// ErrMixed: the nodes do not agree on the phase.
	ErrMixed = errors.New("cluster is mixed")
	// ErrNotInstalled: the application on a node does not run the hybrid backend.
	ErrNotInstalled = errors.New("hybrid backend not installed")
	// ErrGate: a precondition of the change is not met.
	ErrGate = errors.New("gate not met")
	// ErrNotSessions: a table is not an erlmcp session table.
	ErrNotSessions = errors.New("not a session table")
	// ErrWrongPhase: the operation is not allowed in the current phase.
	ErrWrongPhase = errors.New("not allowed in this phase")
	// ErrConflict: someone else changed the phase meanwhile.
	ErrConflict = errors.New("phase changed concurrently")
	// ErrExists: the schema or table already exists.
	ErrExists = errors.New("already exists")
	// ErrBadPercent: phase2's percentage is missing or not 0..100.
	ErrBadPercent = errors.New("bad percent")
	// ErrPartitioned: the Mnesia cluster is split; a phase change would
	// commit on one island only.
	ErrPartitioned = errors.New("cluster partitioned")
	// ErrVerify: an archive or persistence check found a difference.
	ErrVerify = errors.New("verification failed")
)

// isReason tells whether err is an agent error with this reason.
func isReason(err error, reason string) bool {
	var re *erl.RPCError
	return errors.As(err, &re) && re.Reason == reason
}
