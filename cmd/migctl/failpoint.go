package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// failpoint turns MIGCTL_FAILPOINT into a migrate.Config.StepHook, so that
// tests (and an operator rehearsing a failure) can stop a real migctl
// process at a named step and kill it there:
//
//	MIGCTL_FAILPOINT=pause@commit:after-first migctl phase set phase2 --yes
//
// "pause@STEP" prints "migctl: failpoint: paused at STEP (pid N)" on
// stderr when the operation reaches STEP and waits until the process is
// killed or interrupted; "error@STEP" fails there as a crash would
// (nothing after it runs; the journal keeps what a crash leaves). STEP is
// one of migrate.Config.StepHook's step names; a trailing * matches a
// prefix ("backfill:batch:*"). Empty: no failpoint.
func failpoint(ctx context.Context, spec string, stderr io.Writer) (func(string) error, error) {
	if spec == "" {
		return nil, nil
	}
	action, step, ok := strings.Cut(spec, "@")
	if !ok || step == "" || (action != "pause" && action != "error") {
		return nil, fmt.Errorf("MIGCTL_FAILPOINT=%q: want pause@STEP or error@STEP (e.g. pause@commit:after-first)", spec)
	}
	match := func(s string) bool {
		if p, ok := strings.CutSuffix(step, "*"); ok {
			return strings.HasPrefix(s, p)
		}
		return s == step
	}
	return func(s string) error {
		if !match(s) {
			return nil
		}
		if action == "error" {
			return fmt.Errorf("failpoint %s", s)
		}
		fmt.Fprintf(stderr, "migctl: failpoint: paused at %s (pid %d)\n", s, os.Getpid())
		<-ctx.Done()
		return ctx.Err()
	}, nil
}
