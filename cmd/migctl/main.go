// Command migctl moves erlmcp's session store from ETS to DETS to a
// replicated Mnesia cluster, proves that stores agree, and heals a split
// Mnesia cluster. Each command parses its flags and calls one library
// package; this file only wires signals and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/erlmcp/migctl/internal/cliutil"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "migctl: stopping (press Ctrl-C again to force)")
		cancel()
		<-sig
		os.Exit(130)
	}()
	root := newRootCmd(os.Stdin, os.Stdout, os.Stderr)
	err := root.ExecuteContext(ctx)
	cancel()
	code, hint := exitStatus(err)
	if err != nil && !errors.Is(err, cliutil.ErrSilent) {
		fmt.Fprintln(os.Stderr, "migctl:", err)
		if hint != "" {
			fmt.Fprintln(os.Stderr, "migctl: hint:", hint)
		}
	}
	os.Exit(code)
}
