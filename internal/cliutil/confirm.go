package cliutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// ErrNotConfirmed: the operator said no, or could not be asked.
var ErrNotConfirmed = errors.New("not confirmed")

// Confirm asks before a change. With yes it returns at once. Without a
// terminal on stdin it refuses rather than wait for input that will never
// come (a cron job, a CI step): the caller must pass --yes.
func Confirm(in io.Reader, out io.Writer, yes bool, prompt string) error {
	if yes {
		return nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return WithCode(ExitRefused, fmt.Errorf("%w: %s; no terminal to ask on: pass --yes to proceed, or --dry-run to see the plan", ErrNotConfirmed, prompt))
	}
	fmt.Fprintf(out, "%s [y/N] ", prompt)
	line, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a == "y" || a == "yes" {
		return nil
	}
	return WithCode(ExitRefused, fmt.Errorf("%w: operator declined", ErrNotConfirmed))
}

// IsTerminal tells whether w is a terminal (for progress bars).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
