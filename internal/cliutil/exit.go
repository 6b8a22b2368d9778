package cliutil

import (
	"errors"
	"fmt"
)

// Exit codes. Scripts (and the runbook's wrappers) depend on them; they are
// documented in the README and never reused for another meaning. Which
// library error gets which code is one table in cmd/migctl (exitcodes.go).
const (
	ExitOK          = 0 // success; a check found nothing wrong
	ExitFailure     = 1 // the operation failed
	ExitUsage       = 2 // bad flags or input; nothing was changed
	ExitUnreachable = 3 // a node could not be reached (name, epmd, cookie, down)
	ExitDifferences = 4 // a check ran and found a problem (differences, unhealthy)
	ExitRefused     = 5 // refused: confirmation missing, or a gate/precondition failed
	ExitDegraded    = 6 // cluster degraded (a node down)
	ExitPartitioned = 7 // cluster partitioned (split brain)
)

// CodeError carries an explicit exit code.
type CodeError struct {
	Code int
	Err  error
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// WithCode wraps err with an exit code.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &CodeError{Code: code, Err: err}
}

// Usage is a bad-input error (exit 2).
func Usage(format string, a ...any) error {
	return &CodeError{Code: ExitUsage, Err: fmt.Errorf(format, a...)}
}

// ErrSilent marks an error already reported to the user (a check that
// printed its findings): main sets the exit code and prints nothing more.
var ErrSilent = errors.New("reported")
