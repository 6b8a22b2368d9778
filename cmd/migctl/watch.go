package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/internal/cliutil"
)

// defaultWatch is the interval of a bare --watch.
const defaultWatch = 2 * time.Second

// watchFlag is --watch [interval] of the reporting commands an operator
// keeps an eye on (phase show, backfill status, cluster status).
type watchFlag struct{ every time.Duration }

func (w *watchFlag) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&w.every, "watch", 0, "repeat every interval until Ctrl-C (exit 0): redrawn on a terminal, otherwise one report per interval (-o json: one JSON object a line); --watch alone is every 2s, --watch=10s to choose")
	f.Lookup("watch").NoOptDefVal = defaultWatch.String()
}

// report prints one report in format fm and returns its verdict (an exit
// code error, or nil).
type report func(ctx context.Context, out io.Writer, fm cliutil.Format) error

// runWatch prints once (the verdict is the exit status), or with --watch
// repeats until ctx ends. While watching, a verdict or a failure (a node
// unreachable for one round) is shown and the loop goes on: the operator
// is watching exactly for such changes. Bad input ends it at once.
// Stopped by Ctrl-C or SIGTERM it exits 0.
func (a *app) runWatch(cmd *cobra.Command, w watchFlag, once report) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	if !cmd.Flags().Changed("watch") {
		return once(ctx, out, a.format)
	}
	if w.every <= 0 {
		return cliutil.Usage("--watch %s: must be positive", w.every)
	}
	tty := cliutil.IsTerminal(out) && a.format == cliutil.Table
	fm := a.format
	if fm == cliutil.JSON {
		fm = cliutil.JSONLines
	}
	t := time.NewTicker(w.every)
	defer t.Stop()
	for round := 0; ; round++ {
		var buf bytes.Buffer
		err := once(ctx, &buf, fm)
		if ctx.Err() != nil {
			return nil
		}
		if exitCode(err) == cliutil.ExitUsage && round == 0 {
			return err
		}
		switch {
		case tty:
			// Home and clear, then the whole report: no flicker of a
			// half-drawn table, no scrollback of stale ones.
			fmt.Fprintf(out, "\033[H\033[2J%s every %s, %s (Ctrl-C to stop)\n\n", cmd.CommandPath(), w.every, time.Now().Format(time.RFC3339))
		case fm == cliutil.Table:
			fmt.Fprintf(out, "--- %s\n", time.Now().Format(time.RFC3339))
		}
		_, _ = out.Write(buf.Bytes())
		if err != nil {
			if fm == cliutil.JSONLines {
				// Keep stdout one object a line: the failure goes with the
				// log, the exit code it would have had too.
				a.log.Warn("watch round failed", "err", err, "exit_code", exitCode(err))
			} else if errors.Is(err, cliutil.ErrSilent) {
				// The report shows the verdict already.
				fmt.Fprintf(out, "(exit code %d)\n", exitCode(err))
			} else {
				fmt.Fprintf(out, "(%v: exit code %d)\n", err, exitCode(err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
