package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
)

// backfillFlags tune a backfill (also the reverse one of phase rollback).
type backfillFlags struct {
	batch      int
	rate       float64
	restart    bool
	noThrottle bool
	limits     migrate.Limits
}

func (b *backfillFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&b.batch, "batch", 500, "sessions per batch (each batch holds the node's store server for a few ms)")
	f.Float64Var(&b.rate, "rate", 0, "at most this many sessions per second over all nodes (0: no limit)")
	f.BoolVar(&b.restart, "restart", false, "ignore the checkpoint in the journal and start from the beginning")
	f.BoolVar(&b.noThrottle, "no-throttle", false, "do not pause on node load")
	f.Float64Var(&b.limits.MaxSchedUtil, "max-sched-util", 0.90, "pause while a node's schedulers are busier than this (0..1)")
	f.Int64Var(&b.limits.MaxStoreQueue, "max-store-queue", 50, "pause while this many requests wait at a node's session store")
	f.Int64Var(&b.limits.MaxMnesiaQueue, "max-mnesia-queue", 200, "pause while Mnesia's transaction manager has this many messages queued")
	f.Int64Var(&b.limits.MaxRunQueue, "max-run-queue", 20, "pause while a node's run queue is longer than this")
}

// progress adapts cliutil.Progress, created once the total is known.
type progress struct {
	a  *app
	mu sync.Mutex
	p  *cliutil.Progress
}

func (p *progress) SetTotal(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.p = cliutil.NewProgress(p.a.err, p.a.log, "backfill", n)
}

func (p *progress) Add(n int64) {
	p.mu.Lock()
	q := p.p
	p.mu.Unlock()
	if q != nil {
		q.Add(n)
	}
}

func (p *progress) done() {
	p.mu.Lock()
	q := p.p
	p.mu.Unlock()
	if q != nil {
		q.Done()
	}
}

func (b *backfillFlags) options(a *app) (migrate.BackfillOptions, *progress) {
	p := &progress{a: a}
	return migrate.BackfillOptions{BatchSize: b.batch, RatePerSec: b.rate, Restart: b.restart,
		NoThrottle: b.noThrottle, Limits: b.limits, Progress: p}, p
}

func (a *app) printBackfill(cmd *cobra.Command, rep *migrate.BackfillReport) error {
	return cliutil.Print(cmd.OutOrStdout(), a.format, rep, func(tw *tabwriter.Writer) {
		r := rep.Record
		cliutil.Row(tw, "NODE", "SCANNED", "WRITTEN", "SKIPPED(NEWER)", "EXPIRED", "PRUNED", "THROTTLED")
		nodes := make([]string, 0, len(rep.PerNode))
		for n := range rep.PerNode {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for _, n := range nodes {
			s := rep.PerNode[n]
			cliutil.Row(tw, n, s.Scanned, s.Written, s.Skipped, s.Expired, s.Deleted, fmt.Sprintf("%.1fs", s.Throttled))
		}
		cliutil.Row(tw, "total", r.Stats.Scanned, r.Stats.Written, r.Stats.Skipped, r.Stats.Expired, r.Stats.Deleted, fmt.Sprintf("%.1fs", r.Stats.Throttled))
		state := "complete"
		switch {
		case r.DryRun:
			state = "dry run: nothing written (WRITTEN is what would be)"
		case !r.Complete:
			state = "NOT complete: " + r.Error
		}
		fmt.Fprintf(tw, "%s backfill, %s, %.0f sessions/s, %.1fs", r.Direction, state, rep.RowsPerSec, r.Seconds)
		if r.Resumed {
			fmt.Fprintf(tw, ", resumed from a checkpoint (%d already scanned)", r.ResumedAt)
		}
		if rep.LastThrottle != "" {
			fmt.Fprintf(tw, "; last pause: %s", rep.LastThrottle)
		}
		fmt.Fprintln(tw)
		if rp := rep.Replicas; rp != nil {
			switch {
			case r.DryRun:
				fmt.Fprintf(tw, "replicas of %s: would load the one on %s; plan:\n", rp.Table, rp.Loader)
				for i, s := range rp.Steps {
					fmt.Fprintf(tw, "  %d. %s\n", i+1, s)
				}
			case rp.Pending:
				fmt.Fprintf(tw, "replicas of %s: ONLY the one on %s; %d removed and not back (rerun the backfill; phase2 is refused until then)\n", rp.Table, rp.Loader, len(rp.Removed)-len(rp.Added))
			default:
				fmt.Fprintf(tw, "replicas of %s: loaded the one on %s, %d added back in %.1fs (removing took %.1fs)\n", rp.Table, rp.Loader, len(rp.Added), rp.AddSeconds, rp.DropSeconds)
			}
		}
	})
}

func newBackfillCmd(a *app) *cobra.Command {
	var ch migChange
	var bf backfillFlags
	var from, to string
	var reverse, replicateAfter bool
	cmd := &cobra.Command{
		Use:   "backfill --from dets --to mnesia",
		Short: "Copy the existing sessions into the new store while dual-writes flow (resumable)",
		Long: `Copies every live session of the old store into the new one on every node,
in batches that the node's session store server runs between two
application requests: a value the application wrote meanwhile is never
overwritten (the newer last_accessed wins) and a session it deleted is not
copied back. Expired sessions are skipped. Progress is checkpointed in the
journal: after a crash or Ctrl-C, run the same command again to resume.
It pauses while a node is loaded (schedulers, queues, Mnesia overload) and
says why. --reverse (or --from NEW --to OLD) copies back after a rollback.

--replicate-after (phase1 only) loads one replica of the Mnesia session
table and adds the others back afterwards with Mnesia's bulk table copy,
instead of applying every row on every replica (at 1.4M sessions on five
nodes that was the backfill's ceiling). Until the replicas are back the
table has one (the old store stays the one the application reads), phase2
is refused, and an interrupted run leaves them to the next backfill; the
replicas removed are journaled first. --dry-run prints the plan. While
each replica writes the table to its disc, Mnesia holds every write to the
table (seconds per replica at a million sessions); the hybrid backend
(migctl_node) acknowledges phase1's writes once the old store has them and
applies them to Mnesia when it lets go (status: dual_writes_pending; phase2
waits for them), so the application's calls do not wait for it.

Needs phase1 or phase2 (phase2 for --reverse).`,
		Args: cobra.NoArgs,
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
			if err := st.Ready(); err != nil {
				return err
			}
			// --from/--to must name the hybrid's two sides.
			p, s := st.Nodes[0].Primary.Kind, st.Nodes[0].Secondary.Kind
			if from != "" || to != "" {
				fk, err := backends.ParseKind(from)
				if err != nil {
					return fmt.Errorf("--from: %w", err) // backends.ErrUnknownStore: 2
				}
				tk, err := backends.ParseKind(to)
				if err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				switch {
				case fk == p && tk == s:
				case fk == s && tk == p:
					reverse = true
				default:
					return cliutil.Usage("--from %s --to %s: the hybrid backend migrates %s -> %s", fk, tk, p, s)
				}
			}
			bo, prog := bf.options(a)
			bo.Reverse, bo.Reason, bo.Force, bo.ReplicateAfter = reverse, ch.reason, ch.force, replicateAfter
			dir := fmt.Sprintf("%s -> %s", p, s)
			if reverse {
				dir = fmt.Sprintf("%s -> %s (reverse)", s, p)
			}
			if ch.dryRun {
				bo.DryRun = true
			} else if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("backfill %s on %d node(s)%s?", dir, len(st.Nodes), map[bool]string{true: ", with the Mnesia session table on one replica until the others are added back at the end"}[replicateAfter])); err != nil {
				return err
			}
			rep, err := m.Backfill(ctx, bo)
			prog.done()
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
	cmd.Flags().StringVar(&from, "from", "", "old store: ets or dets (must be the hybrid's primary)")
	cmd.Flags().StringVar(&to, "to", "", "new store: dets or mnesia (must be the hybrid's secondary)")
	cmd.Flags().BoolVar(&reverse, "reverse", false, "copy new -> old (after phase rollback from phase3)")
	cmd.Flags().BoolVar(&replicateAfter, "replicate-after", false, "phase1, into Mnesia: load one replica of the session table, then add the others back in bulk (much faster on several nodes)")
	cmd.AddCommand(newBackfillStatusCmd(a))
	return cmd
}

func newBackfillStatusCmd(a *app) *cobra.Command {
	var w watchFlag
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Where the last backfills stand, and the checkpoints of unfinished ones",
		Long: `Prints the progress each direction's last backfill recorded in the journal
(state running, done, interrupted, failed, or stalled when a running backfill
stopped updating it: the process died; rerun it to resume) and the
checkpoints an unfinished backfill resumes from. The consistency monitor
exports the same progress as migctl_backfill_* metrics.`,
		Example: `  migctl backfill status
  migctl backfill status --watch     # follow a backfill another shell runs
  sudo -u migctl migctl backfill status --journal /var/lib/migctl/journal.db -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runWatch(cmd, w, a.backfillStatus)
		},
	}
	w.add(cmd)
	return cmd
}

// backfillStatus prints one report from the journal alone: no node is
// contacted (nor needed), and a path without a journal is refused, not
// created. The journal is opened each time: a --watch sees the backfill
// another process writes.
func (a *app) backfillStatus(_ context.Context, w io.Writer, fm cliutil.Format) error {
	j, err := a.readJournal()
	if err != nil {
		return err
	}
	cps, err := migrate.ReadCheckpoints(j)
	if err != nil {
		return err
	}
	ps, err := migrate.ReadBackfillProgress(j)
	if err != nil {
		return err
	}
	pending, err := migrate.ReadPendingReplicas(j)
	if err != nil {
		return err
	}
	now := time.Now()
	type progress struct {
		migrate.BackfillProgress
		EffectiveState string  `json:"effective_state"`
		Scanned        int64   `json:"scanned"`
		Ratio          float64 `json:"ratio"`
	}
	out := struct {
		Progress    []progress               `json:"progress"`
		Checkpoints map[string]migrate.Stats `json:"checkpoints"`
		// PendingReplicas: replicas a --replicate-after backfill removed
		// and has not added back.
		PendingReplicas *migrate.ReplicaPlan `json:"pending_replicas,omitempty"`
	}{Progress: []progress{}, Checkpoints: cps, PendingReplicas: pending}
	for _, p := range ps {
		r := 0.0
		if p.Total > 0 {
			r = min(1, float64(p.Scanned())/float64(p.Total))
		}
		out.Progress = append(out.Progress, progress{BackfillProgress: p, EffectiveState: p.Effective(now), Scanned: p.Scanned(), Ratio: r})
	}
	return cliutil.Print(w, fm, out, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "DIRECTION", "STATE", "SCANNED", "OF", "STARTED", "UPDATED")
		for _, p := range out.Progress {
			cliutil.Row(tw, p.Direction, p.EffectiveState, p.Scanned, p.Total,
				p.Started.Format(time.RFC3339), p.Updated.Format(time.RFC3339))
		}
		if pending != nil {
			cliutil.Row(tw, "")
			fmt.Fprintf(tw, "replicas of %s: only the one on %s; removed and not back: %d of %d (the next backfill, or phase rollback, adds them back)\n",
				pending.Table, pending.Loader, len(pending.Removed)-len(pending.Added), len(pending.Removed))
		}
		if len(cps) == 0 {
			return
		}
		cliutil.Row(tw, "")
		cliutil.Row(tw, "CHECKPOINT", "SCANNED", "WRITTEN", "SKIPPED")
		keys := make([]string, 0, len(cps))
		for k := range cps {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cliutil.Row(tw, k, cps[k].Scanned, cps[k].Written, cps[k].Skipped)
		}
	})
}
