package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
)

// TestExitTable: a wrapped sentinel gets its row's code and hint; the
// first row wins for an error that wraps two; an explicit code (a flag
// check, a verdict) wins over the table's, the hint still printed; erl's
// own hint is not doubled; anything else is 1 without a hint.
func TestExitTable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code int
		hint string
	}{
		{"nil", nil, cliutil.ExitOK, ""},
		{"plain error", errors.New("boom"), cliutil.ExitFailure, ""},
		{"wrapped sentinel", fmt.Errorf("heal: %w", cluster.ErrPlanStale), cliutil.ExitRefused, "make a new plan"},
		{"partitioned", fmt.Errorf("phase set: %w", migrate.ErrPartitioned), cliutil.ExitPartitioned, "cluster heal --plan"},
		{"two sentinels: the first row", errors.Join(migrate.ErrNodeDown, erl.ErrNodeDown), cliutil.ExitUnreachable, "went down"},
		{"usage before unreachable", errors.Join(erl.ErrTimeout, erl.ErrBadNodeName), cliutil.ExitUsage, "erlmcp1@host"},
		{"flag check", cliutil.Usage("--interval must be positive"), cliutil.ExitUsage, ""},
		{"flag check over a sentinel", cliutil.Usage("--source: %w", fmt.Errorf("x: %w", migrate.ErrVerify)), cliutil.ExitUsage, ""},
		{"verdict", cliutil.WithCode(cliutil.ExitDifferences, cliutil.ErrSilent), cliutil.ExitDifferences, ""},
		{"erl error with its own hint", &erl.Error{Op: "connect", Node: "a@h", Err: erl.ErrNodeDown, Hint: "look here"}, cliutil.ExitUnreachable, ""},
		{"erl error without a hint", &erl.Error{Op: "call", Node: "a@h", Err: erl.ErrTimeout}, cliutil.ExitUnreachable, "--timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, hint := exitStatus(c.err)
			require.Equal(t, c.code, code)
			if c.hint == "" {
				require.Empty(t, hint)
			} else {
				require.Contains(t, hint, c.hint)
			}
			require.Equal(t, code, exitCode(c.err))
		})
	}
}

// TestExitTableRows: every row is a real sentinel, listed once, with a
// documented code; a hint that names a command names one that exists.
func TestExitTableRows(t *testing.T) {
	root := newRootCmd(strings.NewReader(""), &strings.Builder{}, &strings.Builder{})
	seen := map[error]bool{}
	cmdRef := regexp.MustCompile(`migctl ([a-z-]+(?: [a-z-]+)?)`)
	for _, r := range exitTable {
		require.NotNil(t, r.err)
		require.False(t, seen[r.err], "%v listed twice", r.err)
		seen[r.err] = true
		require.Contains(t, []int{cliutil.ExitUsage, cliutil.ExitUnreachable, cliutil.ExitDifferences,
			cliutil.ExitRefused, cliutil.ExitPartitioned}, r.code, "%v", r.err)
		for _, m := range cmdRef.FindAllStringSubmatch(r.hint, -1) {
			c, _, err := root.Find(strings.Fields(m[1]))
			require.NoError(t, err, "hint of %v: %q", r.err, r.hint)
			require.NotEqual(t, root, c, "hint of %v names no command: %q", r.err, m[0])
		}
	}
}

// TestNoInlineCodesForErrors: outside the verdicts, commands leave codes
// to the table or to cliutil.Usage. Each cliutil.WithCode in cmd/migctl
// must sit under a comment line (what verdict it is) or carry ErrSilent
// (a verdict already printed).
func TestNoInlineCodesForErrors(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if !strings.Contains(l, "cliutil.WithCode(") {
				continue
			}
			require.NotContains(t, l, "cliutil.ExitUsage", "%s:%d: use cliutil.Usage for bad input", f, i+1)
			commented := i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "//")
			require.True(t, commented || strings.Contains(l, "ErrSilent"), "%s:%d: an inline exit code needs a comment saying which verdict it is", f, i+1)
		}
	}
}
