package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
)

// migChange are --dry-run, --yes, --reason, --force of the migration
// commands.
type migChange struct {
	dryRun bool
	yes    bool
	force  bool
	reason string
}

func (c *migChange) add(cmd *cobra.Command, withForce bool) {
	cmd.Flags().BoolVar(&c.dryRun, "dry-run", false, "print the plan and the checks, change nothing")
	cmd.Flags().BoolVar(&c.yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	cmd.Flags().StringVar(&c.reason, "reason", "", "why (journaled)")
	if withForce {
		cmd.Flags().BoolVar(&c.force, "force", false, "override a failed gate, a skipped phase or a mixed cluster (journaled)")
	}
}

// migrator builds the migration engine over --nodes and --journal.
func (a *app) migrator(ctx context.Context) (*migrate.Migrator, error) {
	nodes, err := a.needNodes()
	if err != nil {
		return nil, err
	}
	c, err := a.erlClient(ctx)
	if err != nil {
		return nil, err
	}
	j, err := a.journal()
	if err != nil {
		return nil, err
	}
	hook, err := failpoint(ctx, os.Getenv("MIGCTL_FAILPOINT"), a.err)
	if err != nil {
		return nil, cliutil.Usage("%w", err)
	}
	return migrate.New(migrate.Config{Client: c, Nodes: nodes, Journal: j, Logger: a.log, StepHook: hook})
}

func newPhaseCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "phase",
		Short: "Show, change or roll back the migration phase of the hybrid session backend",
		Long: `The hybrid backend (erlmcp_session_backend_hybrid) runs in one of four phases:

  phase0  old store only
  phase1  dual-write, read the old store
  phase2  dual-write, read the new store for --percent of the sessions (10, 25, 50, 100)
  phase3  new store only

A change is planned, its gates are checked (phase2 needs a complete
backfill; phase3 needs phase2 at 100 % and a read-error rate under
--max-read-error-rate), then it is committed on every node or on none. While the Mnesia cluster
is partitioned every change is refused (exit 7): heal first.`,
	}
	cmd.AddCommand(newPhaseShowCmd(a), newPhaseSetCmd(a), newPhaseRollbackCmd(a))
	return cmd
}

func newPhaseShowCmd(a *app) *cobra.Command {
	var w watchFlag
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Each node's phase, percentage and counters; a mixed cluster is flagged",
		Example: `  migctl phase show
  migctl phase show --watch          # redrawn every 2s until Ctrl-C
  migctl phase show --watch=10s -o json | jq -c '.nodes[] | [.node, .phase]'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.migrator(cmd.Context())
			if err != nil {
				return err
			}
			return a.runWatch(cmd, w, func(ctx context.Context, out io.Writer, fm cliutil.Format) error {
				return a.showPhase(ctx, m, out, fm)
			})
		},
	}
	w.add(cmd)
	return cmd
}

// showPhase prints one phase report; its verdict is st.Ready().
func (a *app) showPhase(ctx context.Context, m *migrate.Migrator, out io.Writer, fm cliutil.Format) error {
	st, err := m.ShowPhase(ctx)
	if err != nil {
		return err
	}
	if err := printPhaseStatus(out, fm, st); err != nil {
		return err
	}
	return st.Ready()
}

// printPhaseStatus prints ShowPhase's answer.
func printPhaseStatus(out io.Writer, fm cliutil.Format, st migrate.ClusterStatus) error {
	return cliutil.Print(out, fm, st, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "NODE", "PHASE", "PERCENT", "EPOCH", "MODE", "PRIMARY", "SECONDARY", "COUNTERS")
		for _, n := range st.Nodes {
			switch {
			case !n.Reachable:
				cliutil.Row(tw, n.Node, "DOWN", "-", "-", "-", "-", "-", n.Error)
			case !n.Installed:
				cliutil.Row(tw, n.Node, "no hybrid", "-", "-", "-", n.Backend, "-", n.Error)
			default:
				pct := fmt.Sprint(n.Percent)
				if n.Phase == migrate.Phase2 && !n.Fallback {
					pct += " (no fallback)"
				}
				counters := migrate.CountersTable(n.Counters)
				if n.DualWritesPending > 0 {
					// Acknowledged phase1 writes the new store has yet to
					// apply (Mnesia is holding the table).
					counters = fmt.Sprintf("dual_writes_pending=%d %s", n.DualWritesPending, counters)
				}
				cliutil.Row(tw, n.Node, n.Phase, pct, n.Epoch, n.Mode, fmt.Sprintf("%s:%s", n.Primary.Kind, n.Primary.Table),
					fmt.Sprintf("%s:%s", n.Secondary.Kind, n.Secondary.Table), counters)
			}
		}
		if st.Mixed {
			fmt.Fprintln(tw, "MIXED: the nodes disagree on the phase")
		}
		if st.Pending != nil {
			fmt.Fprintf(tw, "UNFINISHED change in the journal (#%d): %s; the next change settles it\n", st.Pending.Seq, st.Pending.Summary())
		}
	})
}

// printChange prints a change record on stdout.
func (a *app) printChange(cmd *cobra.Command, rec *migrate.ChangeRecord) error {
	return a.printChangeTo(cmd.OutOrStdout(), rec, "")
}

// printChangeTo prints a change record; as "plan" its result row says
// that nothing is changed yet (the planning run's state is "dry-run").
func (a *app) printChangeTo(w io.Writer, rec *migrate.ChangeRecord, as string) error {
	if rec == nil {
		return nil
	}
	if as == "plan" {
		r := *rec
		r.State = "plan"
		rec = &r
	}
	return printChangeRecord(w, a.format, rec)
}

func printChangeRecord(w io.Writer, fm cliutil.Format, rec *migrate.ChangeRecord) error {
	return cliutil.Print(w, fm, rec, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "change", fmt.Sprintf("%s/%d%% -> %s/%d%%", rec.From, rec.FromPercent, rec.To, rec.ToPercent))
		cliutil.Row(tw, "nodes", rec.Nodes)
		cliutil.Row(tw, "mode", rec.Mode)
		for _, g := range rec.Gates {
			v := "ok"
			if !g.OK {
				v = "NOT MET"
				if g.Forced {
					v = "NOT MET (forced)"
				}
			}
			cliutil.Row(tw, "gate "+g.Name, v+": "+g.Value)
		}
		if len(rec.Switched) > 0 {
			cliutil.Row(tw, "switched", rec.Switched)
		}
		if len(rec.Reverted) > 0 {
			cliutil.Row(tw, "reverted", rec.Reverted)
		}
		if rec.CommitMs > 0 {
			cliutil.Row(tw, "commit", fmt.Sprintf("%.1f ms", rec.CommitMs))
		}
		if rec.Seq > 0 {
			cliutil.Row(tw, "journal", fmt.Sprintf("#%d", rec.Seq))
		}
		if rec.Note != "" {
			cliutil.Row(tw, "note", rec.Note)
		}
		if rec.Error != "" {
			cliutil.Row(tw, "error", rec.Error)
		}
		res := rec.State
		switch rec.State {
		case "dry-run":
			res = "plan only (--dry-run): nothing changed"
		case "plan":
			res = "plan: nothing changed yet"
		}
		cliutil.Row(tw, "result", res)
	})
}

func newPhaseSetCmd(a *app) *cobra.Command {
	var ch migChange
	var o migrate.ChangeOptions
	cmd := &cobra.Command{
		Use:   "set phase0|phase1|phase2|phase3",
		Short: "Change the phase on every node, or on none",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			to, err := migrate.ParsePhase(args[0])
			if err != nil {
				return err // migrate.ErrUnknownPhase: 2
			}
			given := cmd.Flags().Changed("percent")
			switch {
			case given && (o.Percent < 0 || o.Percent > 100):
				return cliutil.Usage("--percent %d: must be 0..100", o.Percent)
			case given && o.Percent != 100 && to != migrate.Phase2:
				return cliutil.Usage("--percent applies to phase2 only")
			case !given && to == migrate.Phase2:
				return cliutil.Usage("phase2 needs --percent: the share of sessions read from the new store, 0..100 (the runbook goes 10, 25, 50, 100); for example: migctl phase set phase2 --percent 10")
			}
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			o.Force, o.Reason = ch.force, ch.reason
			// Plan and check first: the operator confirms what will happen.
			plan := o
			plan.DryRun = true
			rec, err := m.SetPhase(ctx, to, plan)
			if err != nil || ch.dryRun || rec.State == "unchanged" {
				if perr := a.printChange(cmd, rec); perr != nil {
					return perr
				}
				return err
			}
			if a.format != cliutil.JSON && !ch.yes {
				// The operator sees the plan and the gates before agreeing
				// (on stderr, with the prompt: stdout holds the result
				// only). With --yes nobody is asked: the result alone.
				if perr := a.printChangeTo(a.err, rec, "plan"); perr != nil {
					return perr
				}
			}
			if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("switch %d node(s) from %s/%d%% to %s/%d%%?", len(rec.Nodes), rec.From, rec.FromPercent, rec.To, rec.ToPercent)); err != nil {
				return err
			}
			rec, err = m.SetPhase(ctx, to, o)
			if perr := a.printChange(cmd, rec); perr != nil {
				return perr
			}
			return err
		},
	}
	ch.add(cmd, true)
	cmd.Flags().IntVar(&o.Percent, "percent", -1, "phase2 (required there): percentage of sessions read from the new store, 0..100 (stable per session id)")
	cmd.Flags().Float64Var(&o.MaxReadErrorRate, "max-read-error-rate", migrate.DefaultMaxReadErrorRate, "phase3 gate: highest read-error rate accepted (0.0001 = 0.01 %)")
	cmd.Flags().Int64Var(&o.MinReads, "min-reads", migrate.DefaultMinReads, "phase3 gate: reads from the new store needed before the error rate is judged (-1: no minimum)")
	cmd.Flags().StringVar(&o.Prometheus, "prometheus", "", "read the phase3 read-error rate from this Prometheus (base URL) instead of the nodes' counters")
	cmd.Flags().StringVar(&o.PromQuery, "prom-query", migrate.DefaultPromQuery, "the Prometheus query for the read-error rate")
	return cmd
}

// RollbackResult is `migctl phase rollback -o json`.
type RollbackResult struct {
	Change          *migrate.ChangeRecord   `json:"change"`
	ReverseBackfill *migrate.BackfillReport `json:"reverse_backfill,omitempty"`
}

func newPhaseRollbackCmd(a *app) *cobra.Command {
	var ch migChange
	var bf backfillFlags
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Go back one phase; from phase3 the old store is first brought up to date from the new one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			st, err := m.ShowPhase(ctx)
			if err != nil {
				return err
			}
			if err := st.Ready(); err != nil && !ch.force {
				return err
			}
			if st.Phase == migrate.Phase0 {
				return fmt.Errorf("%w: the cluster is at phase0, nothing to roll back", migrate.ErrWrongPhase)
			}
			plan := fmt.Sprintf("roll back %d node(s) from %s to %s", len(st.Nodes), st.Phase, st.Phase-1)
			if st.Phase == migrate.Phase3 {
				plan += " (reads stay on the new store at 100 %, then a reverse backfill new -> old)"
			}
			fmt.Fprintln(a.err, "plan:", plan)
			if ch.dryRun {
				rec, _, err := m.Rollback(ctx, migrate.ChangeOptions{DryRun: true, Force: ch.force, Reason: ch.reason}, migrate.BackfillOptions{})
				if perr := a.printChange(cmd, rec); perr != nil {
					return perr
				}
				return err
			}
			if err := cliutil.Confirm(a.in, a.err, ch.yes, plan+"?"); err != nil {
				return err
			}
			bo, prog := bf.options(a)
			rec, rep, err := m.Rollback(ctx, migrate.ChangeOptions{Force: ch.force, Reason: ch.reason}, bo)
			prog.done()
			if a.format == cliutil.JSON {
				if perr := cliutil.Print(cmd.OutOrStdout(), a.format, RollbackResult{Change: rec, ReverseBackfill: rep}, nil); perr != nil {
					return perr
				}
				return err
			}
			if perr := a.printChange(cmd, rec); perr != nil {
				return perr
			}
			if rep != nil {
				if perr := a.printBackfill(cmd, rep); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	ch.add(cmd, true)
	bf.add(cmd)
	return cmd
}
