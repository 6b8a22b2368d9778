package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/cluster/sshrun"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// HealCommand is `migctl cluster heal`: plan a split-brain heal, carry it
// out, or resume one. The flags are its fields; Run reads as the steps an
// operator goes through: check the flags, pick the out-of-band path, make
// (or read) the plan, show it, confirm, execute, print the report. The
// heal itself is cluster.Cluster's (Plan, Execute, Resume).
type HealCommand struct {
	app     *app
	cluster *clusterFlags
	change  changeFlags
	out     io.Writer // the command's stdout

	Plan         bool          // --plan: show the plan, change nothing
	Execute      bool          // --execute
	PlanFile     string        // --plan-file: with --execute, exactly this plan
	Resume       string        // --resume ID
	Winner       string        // --winner NODE
	SplitAt      string        // --split-at, RFC 3339
	KeepWindow   string        // --keep-window: auto, off or a duration
	BackupDir    string        // --backup-dir (default: backups/ beside the journal)
	SSHConfig    string        // --ssh-config
	SSHNodes     []string      // --ssh-nodes
	StopAfter    string        // --stop-after STEP
	FenceTimeout time.Duration // --fence-timeout

	// Parsed by check.
	splitAt    time.Time
	keepWindow time.Duration
	hook       func(string) error // MIGCTL_FAILPOINT
}

func newClusterHealCmd(a *app, cf *clusterFlags) *cobra.Command {
	h := &HealCommand{app: a, cluster: cf}
	cmd := &cobra.Command{
		Use:   "heal (--plan | --execute [--plan-file FILE] | --resume ID) [--winner NODE] [--yes] [--dry-run]",
		Short: "Heal a split brain keeping both sides' writes: --plan shows the evidence, --execute does it",
		Long: `--plan shows the islands, what each side wrote and deleted since the split,
the winner and why (largest island; then most recent writes; or --winner),
and what happens to every key the losers changed. It changes nothing.

Decisions come from the change recorders (the migctl_node library on every
node): for a key the sides disagree on, the side whose last recorded change
is the later one wins, its row or its deletion. Without complete records
(no library, or a node restarted during the split) the plan says so and
falls back to the rows' times and the split time.

--execute backs up the losers' tables (--backup-dir, kept until you remove
them), reads the losers' changes out of their copies, reconnects every pair
of nodes, holds the losers' writers (clients there wait; the report says
how long), reads their changes a last time, merges them into the winners,
makes the losers reload from the winners by restarting Mnesia only (their
Erlang nodes keep running), verifies (repairing replicas that differ), and
journals every step. Traffic can stay on throughout. Nodes listed in
--ssh-nodes are restarted over SSH instead, with the commands of
--ssh-config.

To carry out exactly the plan you read: --plan -o json > plan.json, then
--execute --plan-file plan.json (refused, exit 5, if the islands changed).
--resume ID continues an interrupted heal; with --dry-run it lists the
steps it would run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h.out = cmd.OutOrStdout()
			return h.Run(cmd.Context())
		},
	}
	h.addFlags(cmd)
	return cmd
}

func (h *HealCommand) addFlags(cmd *cobra.Command) {
	h.change.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&h.Plan, "plan", false, "show the plan and the evidence; change nothing")
	f.BoolVar(&h.Execute, "execute", false, "heal")
	f.StringVar(&h.Winner, "winner", "", "a node of the island that must win (default: largest island, then latest write)")
	f.StringVar(&h.SplitAt, "split-at", "", "time of the split if known (RFC 3339); default: estimated from the data")
	f.StringVar(&h.KeepWindow, "keep-window", "auto", "how long before the split a row on one side only is kept, not taken for a deletion: auto (1.25 × net_ticktime + 2 s), a duration, or off")
	f.StringVar(&h.BackupDir, "backup-dir", "", "where the losers' tables are backed up (default: backups/ beside the journal)")
	f.StringVar(&h.SSHConfig, "ssh-config", "", "SSH configuration (JSON) for out-of-band restarts")
	f.StringSliceVar(&h.SSHNodes, "ssh-nodes", nil, "losing nodes to restart over SSH instead of in band")
	f.StringVar(&h.Resume, "resume", "", "continue an interrupted heal by its id (see restore-backup --list)")
	f.StringVar(&h.StopAfter, "stop-after", "", "stop after this step ("+strings.Join(cluster.HealSteps(), ", ")+"); --resume goes on")
	f.DurationVar(&h.FenceTimeout, "fence-timeout", 5*time.Minute, "the longest the losers' writers are held; past it the fence lifts by itself and the heal stops before the reload (resume)")
	f.StringVar(&h.PlanFile, "plan-file", "", "with --execute: carry out exactly this plan (written by --plan -o json); refused if the islands changed since")
}

// Run plans, executes or resumes the heal.
func (h *HealCommand) Run(ctx context.Context) error {
	if err := h.check(ctx); err != nil {
		return err
	}
	if h.Resume != "" {
		return h.resume(ctx)
	}
	oob, err := h.outOfBand()
	if err != nil {
		return err
	}
	cl, err := h.cluster.open(ctx, h.app)
	if err != nil {
		return err
	}
	p, err := h.plan(ctx, cl)
	if err != nil {
		return err
	}
	if h.Plan {
		return printPlan(h.out, h.app.format, p)
	}
	opts := h.executeOptions(oob)
	if h.change.dryRun {
		rep, err := cl.Execute(ctx, p, opts)
		if err != nil {
			return err
		}
		return printHeal(h.out, h.app.format, p, rep)
	}
	if err := h.confirm(p); err != nil {
		return err
	}
	j, err := h.app.journal()
	if err != nil {
		return err
	}
	opts.Journal = j
	rep, err := cl.Execute(ctx, p, opts)
	return h.report(p, rep, err)
}

// check validates the flags (no I/O but MIGCTL_FAILPOINT's parse) and
// parses --split-at and --keep-window.
func (h *HealCommand) check(ctx context.Context) error {
	if h.StopAfter != "" && !slices.Contains(cluster.HealSteps(), h.StopAfter) {
		return cliutil.Usage("--stop-after %q: not a step of the heal (%s)", h.StopAfter, strings.Join(cluster.HealSteps(), ", "))
	}
	hook, err := failpoint(ctx, os.Getenv("MIGCTL_FAILPOINT"), h.app.err)
	if err != nil {
		return cliutil.Usage("%w", err)
	}
	h.hook = hook
	if h.Resume != "" {
		if h.Plan || h.Execute || h.PlanFile != "" {
			return cliutil.Usage("--resume goes alone (the plan is in the journal)")
		}
		return nil
	}
	if h.Plan == h.Execute {
		return cliutil.Usage("give exactly one of --plan, --execute and --resume")
	}
	if h.PlanFile != "" && !h.Execute {
		return cliutil.Usage("--plan-file goes with --execute (write one with --plan -o json)")
	}
	if h.PlanFile != "" && (h.Winner != "" || h.SplitAt != "" || h.KeepWindow != "auto") {
		return cliutil.Usage("--plan-file carries its own winner, split time and keep window")
	}
	if h.SplitAt != "" {
		t, err := time.Parse(time.RFC3339Nano, h.SplitAt)
		if err != nil {
			return cliutil.Usage("--split-at: %v (want RFC 3339, e.g. 2026-11-28T01:02:03Z)", err)
		}
		h.splitAt = t
	}
	kw, err := parseKeepWindow(h.KeepWindow)
	if err != nil {
		return err
	}
	h.keepWindow = kw
	return nil
}

// outOfBand is the SSH path for --ssh-nodes: --ssh-config, or the ssh
// section of --config; nil when neither is given.
func (h *HealCommand) outOfBand() (cluster.OutOfBand, error) {
	a := h.app
	if h.SSHConfig == "" && (a.cfg == nil || a.cfg.SSH == nil) {
		if len(h.SSHNodes) > 0 {
			return nil, cliutil.Usage("--ssh-nodes needs --ssh-config or an ssh section in --config")
		}
		return nil, nil
	}
	var c sshrun.Config
	if h.SSHConfig != "" {
		var err error
		if c, err = sshrun.LoadConfig(h.SSHConfig); err != nil {
			return nil, cliutil.Usage("--ssh-config: %w", err)
		}
	} else {
		c = *a.cfg.SSH // the ssh section of --config
	}
	r, err := sshrun.New(c, a.log)
	if err != nil {
		return nil, cliutil.Usage("ssh configuration: %w", err)
	}
	return r, nil
}

// plan reads --plan-file (checked against the cluster as it is now) or
// makes a new plan.
func (h *HealCommand) plan(ctx context.Context, cl *cluster.Cluster) (*cluster.Plan, error) {
	var p *cluster.Plan
	var err error
	if h.PlanFile != "" {
		p, err = readPlanFile(ctx, cl, h.PlanFile)
	} else {
		p, err = cl.Plan(ctx, cluster.PlanOptions{Winner: h.Winner, SplitAt: h.splitAt, OutOfBand: h.SSHNodes, KeepWindow: h.keepWindow})
	}
	if errors.Is(err, cluster.ErrPlanStale) {
		return nil, fmt.Errorf("%w; make a new plan with --plan", err)
	}
	return p, err
}

func (h *HealCommand) executeOptions(oob cluster.OutOfBand) cluster.ExecuteOptions {
	backupDir := h.BackupDir
	if backupDir == "" {
		backupDir = filepath.Join(filepath.Dir(h.app.journalAt), "backups")
	}
	return cluster.ExecuteOptions{Reason: h.change.reason, BackupDir: backupDir, DryRun: h.change.dryRun,
		OutOfBand: oob, OutOfBandNodes: h.SSHNodes, StopAfter: h.StopAfter, StepHook: h.hook, FenceTimeout: h.FenceTimeout}
}

// confirm shows the plan (as a table; -o json prints only the report) and
// asks (--yes; refused without a terminal).
func (h *HealCommand) confirm(p *cluster.Plan) error {
	if h.app.format != cliutil.JSON {
		if err := printPlan(h.out, h.app.format, p); err != nil {
			return err
		}
	}
	return cliutil.Confirm(h.app.in, h.app.err, h.change.yes,
		fmt.Sprintf("heal: %s win, %s reload from them?", cliutil.Cell(p.WinnerNodes()), cliutil.Cell(p.LoserNodes())))
}

// report prints what an execution or a resume did, also when it failed
// part-way (the report says where to resume); err wins over a print error.
func (h *HealCommand) report(p *cluster.Plan, rep *cluster.HealReport, err error) error {
	if rep != nil {
		if perr := printHeal(h.out, h.app.format, p, rep); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// resume continues the heal --resume names, from the journal: the steps
// left are shown (all of --dry-run) and confirmed first.
func (h *HealCommand) resume(ctx context.Context) error {
	a, id := h.app, h.Resume
	open := a.existingJournal
	if h.change.dryRun {
		open = a.readJournal
	}
	j, err := open()
	if err != nil {
		return err
	}
	hs, err := cluster.ListHeals(j)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(hs, func(r cluster.HealRecord) bool { return r.ID == id })
	switch {
	case i < 0:
		return cliutil.Usage("--resume %q: no such heal in the journal %s (see cluster restore-backup --list)", id, j.Path())
	case hs[i].Completed:
		// Not a library error: the journal's answer, read here.
		return cliutil.WithCode(cliutil.ExitRefused, fmt.Errorf("--resume %q: that heal completed, nothing to resume", id))
	}
	cl, err := h.cluster.open(ctx, a)
	if err != nil {
		return err
	}
	opts := cluster.ExecuteOptions{Journal: j, Reason: h.change.reason, StopAfter: h.StopAfter, StepHook: h.hook, FenceTimeout: h.FenceTimeout}
	// The steps left, from the journal alone: what --dry-run prints, and
	// what the operator sees before agreeing.
	dry := opts
	dry.DryRun = true
	plan, err := cl.Resume(ctx, id, dry)
	if err != nil {
		return err
	}
	if h.change.dryRun {
		return printHeal(h.out, a.format, nil, plan)
	}
	if a.format != cliutil.JSON {
		if err := printHeal(h.out, a.format, nil, plan); err != nil {
			return err
		}
	}
	if err := cliutil.Confirm(a.in, a.err, h.change.yes, fmt.Sprintf("resume heal %s: %s win, %s reload from them?", id, cliutil.Cell(plan.Winner), cliutil.Cell(plan.Losers))); err != nil {
		return err
	}
	rep, err := cl.Resume(ctx, id, opts)
	return h.report(nil, rep, err)
}

// readPlanFile reads a plan written by --plan -o json and checks that the
// cluster is still split the way it saw (cluster.ErrPlanStale if not).
func readPlanFile(ctx context.Context, cl *cluster.Cluster, file string) (*cluster.Plan, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, cliutil.Usage("--plan-file: %w", err)
	}
	defer fh.Close()
	p, err := cluster.ReadPlan(fh, cl.Tables())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.Matches(st); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

func printPlan(w io.Writer, f cliutil.Format, p *cluster.Plan) error {
	return cliutil.Print(w, f, p, func(tw *tabwriter.Writer) {
		for i, is := range p.Islands {
			role := "loser"
			switch {
			case i == p.Winner:
				role = "WINNER"
			case is.Unreachable:
				role = "loser, unreachable: restarted over SSH; its writes since the split stay in its moved-aside Mnesia directory"
			}
			var sizes []string
			for t, n := range is.Sizes {
				sizes = append(sizes, fmt.Sprintf("%s=%d", t, n))
			}
			sort.Strings(sizes)
			cliutil.Row(tw, fmt.Sprintf("island %d", i), role, strings.Join(is.Nodes, " "), "rows "+strings.Join(sizes, ","),
				"last write "+msText(is.LastWrite))
		}
		cliutil.Row(tw, "winner", p.WinnerReason)
		cliutil.Row(tw, "keep window", (time.Duration(p.KeepWindowMillis) * time.Millisecond).String(), p.KeepWindowDetail)
		for _, t := range p.Tables {
			for _, l := range t.Losers {
				cliutil.Row(tw, fmt.Sprintf("%s, island %d vs winner", t.Table, l.Island), fmt.Sprintf("split at %s (%s)", msText(l.SplitAt), l.SplitAtSource))
				if l.SplitAtDetail != "" {
					cliutil.Row(tw, "  split time from", l.SplitAtDetail)
				}
				if l.EvidenceComplete {
					cliutil.Row(tw, "  decided from", "the change recorders: "+l.Evidence)
				} else {
					cliutil.Row(tw, "  decided from", "the rows' times (no complete change records): "+l.Evidence)
				}
				cliutil.Row(tw, "  loser wrote", len(l.WrittenOnLoser), sample(l.WrittenOnLoser))
				cliutil.Row(tw, "  loser deleted", len(l.DeletedOnLoser), sample(l.DeletedOnLoser))
				cliutil.Row(tw, "  winner wrote", len(l.WrittenOnWinner), sample(l.WrittenOnWinner))
				cliutil.Row(tw, "  winner deleted", len(l.DeletedOnWinner), sample(l.DeletedOnWinner))
				if len(l.KeptNearSplit) > 0 {
					cliutil.Row(tw, "  kept, one side only, written just before the split", len(l.KeptNearSplit), sample(l.KeptNearSplit))
				}
				wr, de, dr := l.Counts()
				cliutil.Row(tw, "  merge", fmt.Sprintf("write %d, delete %d, drop %d (winner's newer)", wr, de, dr))
				if o := l.Overruled(); o > 0 {
					cliutil.Row(tw, "  overruled", fmt.Sprintf("%d of the drops: another losing island changed those keys later, and its change decides", o))
				}
				for i, d := range l.Decisions {
					if i == 10 {
						cliutil.Row(tw, "", fmt.Sprintf("... %d more (-o json for all)", len(l.Decisions)-10))
						break
					}
					cliutil.Row(tw, "", d.Action, d.ID, d.Why)
				}
			}
		}
	})
}

// parseKeepWindow reads --keep-window: "auto" (0: the library works it out
// from net_ticktime), "off" (negative: no window), or a duration.
func parseKeepWindow(v string) (time.Duration, error) {
	switch v {
	case "", "auto":
		return 0, nil
	case "off", "0", "0s":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, cliutil.Usage("--keep-window %q: want auto, off or a duration such as 90s", v)
	}
	return d, nil
}

func sample(cs []cluster.KeyChange) string {
	var s []string
	for i, c := range cs {
		if i == 3 {
			s = append(s, "...")
			break
		}
		s = append(s, fmt.Sprintf("%s@%s", c.ID, msText(c.LastAccessed)))
	}
	return strings.Join(s, " ")
}

func msText(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

func printHeal(w io.Writer, f cliutil.Format, p *cluster.Plan, rep *cluster.HealReport) error {
	// Sections with their own headers (an empty row ends tabwriter's
	// column block): backups and merges used to sit under the step
	// columns.
	return cliutil.Print(w, f, rep, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "STEP", "TOOK", "RESULT", "DETAIL")
		for _, s := range rep.Steps {
			st := "ok"
			if rep.DryRun {
				st = "plan"
			}
			if s.Error != "" {
				st = "FAILED: " + s.Error
			}
			cliutil.Row(tw, s.Step, s.Duration.Round(time.Millisecond), st, s.Detail)
		}
		if len(rep.Backups) > 0 {
			cliutil.Row(tw)
			cliutil.Row(tw, "BACKUP OF", "TABLE", "ROWS", "FILE")
			for _, b := range rep.Backups {
				cliutil.Row(tw, b.Node, b.Table, b.Count, b.File)
			}
		}
		if len(rep.Merged) > 0 {
			cliutil.Row(tw)
			cliutil.Row(tw, "MERGED INTO", "WRITTEN", "SKIPPED", "DELETED", "KEPT")
			for _, m := range rep.Merged {
				cliutil.Row(tw, m.Table, m.Written, m.Skipped, m.Deleted, m.Kept)
			}
		}
		cliutil.Row(tw)
		if len(rep.Repaired) > 0 {
			cliutil.Row(tw, "replicas repaired", rep.Repaired)
		}
		if rep.DryRun {
			cliutil.Row(tw, "result", "plan only (--dry-run): nothing changed")
			return
		}
		if rep.LongestFence > 0 {
			cliutil.Row(tw, "writers held", rep.LongestFence.Round(time.Millisecond).String()+" (the longest the losers' clients could have waited)")
		}
		res := "healed"
		if !rep.Healed {
			res = "NOT healed (resume it: migctl cluster heal --resume " + rep.ID + ")"
		}
		cliutil.Row(tw, "result", res+" in "+rep.Duration.Round(time.Millisecond).String())
	})
}
