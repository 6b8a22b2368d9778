package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
)

func newConsistencyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consistency",
		Short: "Check that two session stores agree, repair them, watch them (monitor), and list past runs",
		Long: `consistency compares two session stores (any pair of ets, dets, mnesia) with
checksums computed on the nodes: only sums travel, and only ranges that
differ are narrowed down to sessions.

The comparison rule: every field of a session is compared exactly except
last_accessed, which may differ by --last-accessed-tolerance (every fetch
rewrites it); expired sessions are skipped; a difference is read again after
--recheck-delay and reported only if it persists (in-flight writes settle).`,
	}
	cmd.AddCommand(newConsistencyCheckCmd(a), newConsistencyRepairCmd(a), newConsistencyUndoCmd(a),
		newConsistencyMonitorCmd(a), newConsistencyHistoryCmd(a))
	return cmd
}

// pairFlags select the two stores and the comparison rule.
type pairFlags struct {
	sf         storeFlags
	source     string
	target     string
	sourceNode string
	targetNode string
	sample     int
	full       bool
	tolerance  time.Duration
	ignoreLA   bool
	recheck    time.Duration
	seed       uint64
	method     string
	noInFlight bool
}

func (p *pairFlags) addFlags(cmd *cobra.Command, sampleDefault int) {
	f := cmd.Flags()
	f.StringVar(&p.source, "source", "", "source store: ets, dets or mnesia (env MIGCTL_SOURCE)")
	withEnv(f, "source", "MIGCTL_SOURCE")
	f.StringVar(&p.target, "target", "", "target store: ets, dets or mnesia (env MIGCTL_TARGET)")
	withEnv(f, "target", "MIGCTL_TARGET")
	f.StringVar(&p.sourceNode, "source-node", "", "node holding the source store (default: ETS/DETS on every node of --nodes, as one store; Mnesia on the first)")
	f.StringVar(&p.targetNode, "target-node", "", "node to read the target store on (default: as for --source-node)")
	f.IntVar(&p.sample, "sample", sampleDefault, "check about N sessions drawn at random over the key space (0: all, like --full)")
	f.BoolVar(&p.full, "full", false, "check every session (checksums first, only differing ranges narrowed down)")
	f.DurationVar(&p.tolerance, "last-accessed-tolerance", consistency.DefaultLastAccessedTolerance, "last_accessed may differ by this much between the stores")
	f.BoolVar(&p.ignoreLA, "ignore-last-accessed", false, "do not compare last_accessed at all (phase1 when reads touch the old store only)")
	f.DurationVar(&p.recheck, "recheck-delay", 2*time.Second, "wait before reading a difference again")
	f.Uint64Var(&p.seed, "seed", 0, "seed of the sample (0: random), to repeat a sample")
	f.StringVar(&p.method, "sample-method", "auto", "how a sample is drawn: auto, slots (drawn on the nodes, no scan), dets-slots (a DETS file's slots, one pass over the other side) or hash-ranges (one scan per side)")
	f.BoolVar(&p.noInFlight, "no-in-flight-exclusion", false, "full check: compare the sessions written during the check in the checksum buckets too, instead of leaving them out (per the change recorders) and reading them by key at the end")
	p.sf.addFlags(cmd, false)
}

// options validates the flags (no I/O) and returns the check options
// without the client.
func (p *pairFlags) options(cmd *cobra.Command) (consistency.Options, backends.Kind, backends.Kind, error) {
	var o consistency.Options
	if p.source == "" || p.target == "" {
		return o, "", "", cliutil.Usage("--source and --target are required (ets, dets or mnesia)")
	}
	sk, err := backends.ParseKind(p.source)
	if err != nil {
		return o, "", "", fmt.Errorf("--source: %w", err) // backends.ErrUnknownStore: 2
	}
	tk, err := backends.ParseKind(p.target)
	if err != nil {
		return o, "", "", fmt.Errorf("--target: %w", err)
	}
	if p.full && cmd.Flags().Changed("sample") {
		return o, "", "", cliutil.Usage("--sample and --full exclude each other")
	}
	if p.sample < 0 {
		return o, "", "", cliutil.Usage("--sample must not be negative")
	}
	if !p.full {
		o.Sample = p.sample
	}
	if p.tolerance <= 0 && !p.ignoreLA {
		return o, "", "", cliutil.Usage("--last-accessed-tolerance must be positive (or use --ignore-last-accessed)")
	}
	o.Rule.LastAccessedTolerance = p.tolerance
	if p.ignoreLA {
		o.Rule.LastAccessedTolerance = -1
	}
	if p.recheck <= 0 {
		return o, "", "", cliutil.Usage("--recheck-delay must be positive")
	}
	o.RecheckDelay, o.Seed, o.NoInFlightExclusion = p.recheck, p.seed, p.noInFlight
	if o.SampleMethod, err = parseSampleMethod(p.method); err != nil {
		return o, "", "", err
	}
	return o, sk, tk, nil
}

// parseSampleMethod reads --sample-method: auto (or empty) is
// consistency.SampleAuto; slots-lookup, the former name of slots, is
// accepted as it is (package consistency reads it as slots) but not
// advertised.
func parseSampleMethod(s string) (consistency.SampleMethod, error) {
	switch s {
	case "auto", "":
		return consistency.SampleAuto, nil
	case string(consistency.SampleSlots), string(consistency.SampleSlotsLookup), string(consistency.SampleDETSSlots), string(consistency.SampleHashRanges):
		return consistency.SampleMethod(s), nil
	}
	return "", cliutil.Usage("--sample-method %q: want auto, slots, dets-slots or hash-ranges", s)
}

// open connects and opens both stores. A node-local store (ETS, DETS)
// named without --source-node/--target-node is the union of that store on
// every node of --nodes: erlmcp keeps one DETS file per node, and the
// Mnesia table they migrate to holds the sessions of all of them. Mnesia
// is read on one node (the first of --nodes unless given).
func (p *pairFlags) open(ctx context.Context, a *app, sk, tk backends.Kind) (backends.Store, backends.Store, error) {
	var nodes []string
	if p.sourceNode == "" || p.targetNode == "" {
		var err error
		if nodes, err = a.needNodes(); err != nil {
			return nil, nil, err
		}
	}
	if len(a.nodes) == 0 {
		a.nodes = []string{p.sourceNode}
	}
	c, err := a.erlClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	side := func(k backends.Kind, node string) (backends.Store, error) {
		spec := p.sf.specOf(k)
		if node != "" {
			return backends.Open(c, node, spec)
		}
		if k == backends.KindMnesia || len(nodes) == 1 {
			return backends.Open(c, nodes[0], spec)
		}
		var members []backends.Store
		for _, n := range nodes {
			s, err := backends.Open(c, n, spec)
			if err != nil {
				return nil, err
			}
			members = append(members, s)
		}
		return backends.NewUnion(members...)
	}
	src, err := side(sk, p.sourceNode)
	if err != nil {
		return nil, nil, err
	}
	tgt, err := side(tk, p.targetNode)
	if err != nil {
		return nil, nil, err
	}
	return src, tgt, nil
}

func newConsistencyCheckCmd(a *app) *cobra.Command {
	var pf pairFlags
	cmd := &cobra.Command{
		Use:   "check --source dets --target mnesia [--sample N | --full]",
		Short: "Compare two stores; exit 0 when they agree, 4 when they differ",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, sk, tk, err := pf.options(cmd)
			if err != nil {
				return err
			}
			src, tgt, err := pf.open(cmd.Context(), a, sk, tk)
			if err != nil {
				return err
			}
			o.Client, o.Log = a.client, a.log
			rep, err := consistency.Check(cmd.Context(), src, tgt, o)
			if err != nil {
				return err
			}
			if j, jerr := a.journal(); jerr == nil {
				if _, jerr := consistency.RecordCheck(j, rep, "cli"); jerr != nil {
					a.log.Warn("recording the check in the journal", "err", jerr)
				}
			} else {
				a.log.Warn("opening the journal", "err", jerr)
			}
			if err := cliutil.Print(cmd.OutOrStdout(), a.format, rep, func(tw *tabwriter.Writer) { printReport(tw, rep) }); err != nil {
				return err
			}
			if !rep.Clean() {
				// The verdict (printed above): differences found.
				return cliutil.WithCode(cliutil.ExitDifferences, cliutil.ErrSilent)
			}
			return nil
		},
	}
	pf.addFlags(cmd, 0)
	return cmd
}

func printReport(tw *tabwriter.Writer, rep *consistency.Report) {
	cliutil.Row(tw, "source", rep.Source)
	cliutil.Row(tw, "target", rep.Target)
	mode := rep.Mode
	if rep.Mode == "sample" {
		mode += " (seed " + strconv.FormatUint(rep.Seed, 10) + ")"
	}
	cliutil.Row(tw, "mode", mode)
	cliutil.Row(tw, "rows", fmt.Sprintf("source %d, target %d", rep.SourceRows, rep.TargetRows))
	cliutil.Row(tw, "processed", rep.Processed)
	cliutil.Row(tw, "matching", rep.Matching)
	cliutil.Row(tw, "mismatched", rep.Mismatched)
	cliutil.Row(tw, "missing in target", rep.MissingInTarget)
	cliutil.Row(tw, "extra in target", rep.ExtraInTarget)
	cliutil.Row(tw, "expired (skipped)", rep.Expired)
	cliutil.Row(tw, "rechecked", rep.Rechecked)
	if rep.Unsettled > 0 {
		cliutil.Row(tw, "unsettled (in flight)", fmt.Sprintf("%d: the older copy changed on every read (a hot session still being written); not a difference, check again or watch the monitor", rep.Unsettled))
	}
	cliutil.Row(tw, "not sessions (not compared)", rep.NotSessions)
	cliutil.Row(tw, "bytes moved", fmt.Sprintf("%d in %d round trips, %d checksum round(s)", rep.BytesMoved, rep.RoundTrips, rep.Rounds))
	if inf := rep.InFlight; inf != nil {
		if inf.Used {
			cliutil.Row(tw, "in flight", fmt.Sprintf("%d key(s) changed since %s (%s's recorders) verified by key, out of the buckets",
				inf.VerifiedByKey, time.UnixMilli(inf.SinceMs).UTC().Format(time.RFC3339), inf.Table))
		} else {
			cliutil.Row(tw, "in flight", "compared in the buckets: "+inf.WhyNot)
		}
	}
	cliutil.Row(tw, "duration", rep.Duration.Round(time.Millisecond))
	for _, k := range consistency.Kinds {
		for _, d := range rep.Samples[k] {
			cliutil.Row(tw, string(k), fmt.Sprintf("%q", d.ID), d.Diff)
		}
	}
	if rep.Clean() {
		cliutil.Row(tw, "result", "the stores agree")
	} else {
		cliutil.Row(tw, "result", fmt.Sprintf("%d difference(s), %d row(s) that are not sessions", rep.Mismatched+rep.MissingInTarget+rep.ExtraInTarget, rep.NotSessions))
	}
}

func newConsistencyRepairCmd(a *app) *cobra.Command {
	var pf pairFlags
	var dryRun, yes, deleteExtra bool
	var reason string
	cmd := &cobra.Command{
		Use:   "repair --source dets --target mnesia [--dry-run] [--yes] [--delete-extra] [--reason TEXT]",
		Short: "Copy the newer copy of each differing session to the side that lacks it or holds an older one",
		Long: `repair runs a full check (or --sample N) and makes the stores agree: the newer
copy of a session goes to the side that lacks it or holds an older copy;
sessions only the target holds are copied to the source, or deleted from the
target with --delete-extra. Nothing else is deleted. Every value it overwrites
is saved in the journal first: 'migctl consistency undo-repair RUN' restores
them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, sk, tk, err := pf.options(cmd)
			if err != nil {
				return err
			}
			j, err := a.journal()
			if err != nil {
				return err
			}
			src, tgt, err := pf.open(cmd.Context(), a, sk, tk)
			if err != nil {
				return err
			}
			o.Client, o.Log = a.client, a.log
			ro := consistency.RepairOptions{Check: o, DeleteExtra: deleteExtra, Reason: reason, Journal: j, DryRun: true}
			plan, err := consistency.Repair(cmd.Context(), src, tgt, ro)
			if err != nil {
				return err
			}
			if dryRun || len(plan.Actions) == 0 {
				return cliutil.Print(cmd.OutOrStdout(), a.format, plan, func(tw *tabwriter.Writer) { printRepair(tw, plan) })
			}
			if a.format == cliutil.Table {
				tw := tabwriter.NewWriter(a.err, 2, 4, 2, ' ', 0)
				printRepair(tw, plan)
				tw.Flush()
			}
			if err := cliutil.Confirm(a.in, a.err, yes, fmt.Sprintf("apply %d change(s) to %s and %s?", len(plan.Actions), plan.Check.Source, plan.Check.Target)); err != nil {
				return err
			}
			ro.DryRun = false
			res, err := consistency.Repair(cmd.Context(), src, tgt, ro)
			if err != nil {
				return err
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, res, func(tw *tabwriter.Writer) { printRepair(tw, res) })
		},
	}
	pf.addFlags(cmd, 0)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	f.BoolVar(&deleteExtra, "delete-extra", false, "delete sessions only the target holds (default: copy them to the source)")
	f.StringVar(&reason, "reason", "", "why (journaled)")
	return cmd
}

// printRepair prints a repair's plan or result: the actions, then what
// happened. With nothing to repair it says so (the planning run behind it
// is a dry run, which used to print "DRY RUN").
func printRepair(tw *tabwriter.Writer, r *consistency.RepairResult) {
	cliutil.Row(tw, "checked", fmt.Sprintf("%d sessions, %d difference(s)", r.Check.Processed, len(r.Actions)))
	if len(r.Actions) == 0 {
		cliutil.Row(tw, "result", "nothing to repair")
		return
	}
	cliutil.Row(tw)
	cliutil.Row(tw, "OP", "MODE", "KIND", "ID", "WHY")
	for _, x := range r.Actions {
		cliutil.Row(tw, string(x.Op), string(x.Mode), string(x.Kind), fmt.Sprintf("%q", x.ID), x.Why)
	}
	cliutil.Row(tw)
	if r.DryRun {
		cliutil.Row(tw, "result", "plan only (--dry-run): nothing changed")
		return
	}
	cliutil.Row(tw, "written", r.Written)
	cliutil.Row(tw, "deleted", r.Deleted)
	cliutil.Row(tw, "skipped", r.Skipped)
	cliutil.Row(tw, "saved", fmt.Sprintf("%d (the rows as they were, for undo)", r.Saved))
	if r.Run != 0 {
		cliutil.Row(tw, "result", fmt.Sprintf("repaired, run %d (undo: migctl consistency undo-repair %s)", r.Run, strconv.FormatUint(r.Run, 10)))
	} else {
		cliutil.Row(tw, "result", "repaired")
	}
}

// UndoPlan is `migctl consistency undo-repair RUN --dry-run -o json`: what
// the undo would put back, from the journal alone (no node is contacted).
type UndoPlan struct {
	Run        uint64               `json:"run"`
	DryRun     bool                 `json:"dry_run"`
	Source     string               `json:"source"`
	Target     string               `json:"target"`
	SourceNode string               `json:"source_node"`
	TargetNode string               `json:"target_node"`
	State      string               `json:"state"`
	Saved      int                  `json:"saved"`
	Force      bool                 `json:"force"`
	Actions    []consistency.Action `json:"actions"`
}

func newConsistencyUndoCmd(a *app) *cobra.Command {
	var yes, force, dryRun bool
	var reason string
	cmd := &cobra.Command{
		Use:   "undo-repair RUN",
		Short: "Restore every value a repair run overwrote (from the journal)",
		Long: `Puts back every value repair run RUN saved in the journal before it
overwrote it: overwritten sessions are written back as they were, sessions
the repair added are deleted, deleted ones are written back. A session the
service changed since the repair is left alone and reported as a conflict
(--force restores it too). --dry-run prints, from the journal alone, what
the run changed and how many saved values would be put back.`,
		Example: `  migctl consistency history
  migctl consistency undo-repair 42 --dry-run
  migctl consistency undo-repair 42 --yes --reason "OPS-7 repair went the wrong way"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			run, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || run == 0 {
				return cliutil.Usage("RUN must be a repair's journal sequence number (see migctl consistency history)")
			}
			open := a.existingJournal
			if dryRun {
				open = a.readJournal
			}
			j, err := open()
			if err != nil {
				return err
			}
			e, err := j.Get(run)
			if err != nil {
				return cliutil.Usage("%w", err) // RUN names no entry of the journal
			}
			var rec consistency.RepairRecord
			if e.Kind != consistency.EntryRepair || e.Decode(&rec) != nil {
				return cliutil.Usage("journal entry %d is a %s, not a repair", run, e.Kind)
			}
			if dryRun {
				if rec.State == "undone" {
					return fmt.Errorf("undo-repair %d: %w", run, consistency.ErrAlreadyUndone)
				}
				p := UndoPlan{Run: run, DryRun: true, Source: rec.Source, Target: rec.Target, SourceNode: rec.SourceNode,
					TargetNode: rec.TargetNode, State: rec.State, Saved: rec.Saved, Force: force, Actions: rec.Actions}
				if p.Actions == nil {
					p.Actions = []consistency.Action{}
				}
				return cliutil.Print(cmd.OutOrStdout(), a.format, p, func(tw *tabwriter.Writer) {
					cliutil.Row(tw, "dry run", "nothing changed")
					cliutil.Row(tw, "undo", fmt.Sprintf("repair %d (%s → %s), state %s", run, p.Source, p.Target, p.State))
					cliutil.Row(tw, "put back", fmt.Sprintf("%d saved value(s)", p.Saved))
					if force {
						cliutil.Row(tw, "conflicts", "restored too (--force)")
					} else {
						cliutil.Row(tw, "conflicts", "sessions changed since the repair are left alone (--force restores them)")
					}
					cliutil.Row(tw, "OP OF THE REPAIR", "KIND", "ID")
					for _, x := range p.Actions {
						cliutil.Row(tw, string(x.Op), string(x.Kind), fmt.Sprintf("%q", x.ID))
					}
				})
			}
			if err := cliutil.Confirm(a.in, a.err, yes, fmt.Sprintf("restore %d saved value(s) of repair %d (%s → %s)?", rec.Saved, run, rec.Source, rec.Target)); err != nil {
				return err
			}
			if len(a.nodes) == 0 {
				a.nodes = strings.Split(rec.SourceNode, ",")
			}
			c, err := a.erlClient(cmd.Context())
			if err != nil {
				return err
			}
			src, err := openRecorded(c, rec.SourceNode, rec.SourceSpec)
			if err != nil {
				return err
			}
			tgt, err := openRecorded(c, rec.TargetNode, rec.TargetSpec)
			if err != nil {
				return err
			}
			res, err := consistency.UndoRepair(cmd.Context(), run, src, tgt, consistency.UndoOptions{
				Options: consistency.Options{Client: c, Log: a.log}, Journal: j, Force: force, Reason: reason})
			if err != nil {
				return err
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, res, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "run", res.Run)
				cliutil.Row(tw, "restored", res.Restored)
				cliutil.Row(tw, "deleted", res.Deleted)
				for _, id := range res.Conflicts {
					cliutil.Row(tw, "conflict (changed since the repair, left alone; --force restores)", fmt.Sprintf("%q", id))
				}
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "print what the undo would put back (from the journal), change nothing")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	f.BoolVar(&force, "force", false, "restore even sessions the service changed after the repair")
	f.StringVar(&reason, "reason", "", "why (journaled)")
	return cmd
}

// watchClusterInto runs a cluster watch over the --nodes until the returned
// stop is called, keeping its latest status in a collector registered on
// reg, and logs every change of verdict or islands.
func (a *app) watchClusterInto(ctx context.Context, reg prometheus.Registerer) (func(), error) {
	nodes, err := a.needNodes()
	if err != nil {
		return nil, err
	}
	cl, err := cluster.New(a.client, cluster.Options{Nodes: nodes, Tables: []string{envOr("MIGCTL_MNESIA_TABLE", backends.DefaultMnesiaTable)}, Logger: a.log})
	if err != nil {
		return nil, err
	}
	coll := cluster.NewStatusCollector()
	if err := reg.Register(coll); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cl.Watch(ctx, cluster.WatchOptions{Interval: 5 * time.Second, OnReport: func(r cluster.WatchReport) {
			coll.Set(r.Status)
			if r.Changed {
				lvl := slog.LevelInfo
				if r.Status.Verdict != cluster.Healthy {
					lvl = slog.LevelWarn
				}
				a.log.Log(ctx, lvl, "mnesia cluster", "verdict", r.Status.Verdict, "islands", r.Status.Islands, "problems", r.Status.Problems)
			}
		}})
	}()
	return func() { cancel(); <-done }, nil
}

func newConsistencyHistoryCmd(a *app) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Past checks, repairs and undos with their counts (from the journal)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := a.readJournal()
			if err != nil {
				return err
			}
			h, err := consistency.History(j, limit)
			if err != nil {
				return err
			}
			if h == nil {
				h = []consistency.HistoryEntry{}
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, h, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "SEQ", "TIME", "KIND", "BY", "PROCESSED", "MISMATCHED", "MISSING", "EXTRA", "EXPIRED", "BYTES", "DURATION", "NOTE")
				for _, e := range h {
					ts := e.Time.Format("2006-01-02T15:04:05Z")
					switch {
					case e.Check != nil:
						r := e.Check
						cliutil.Row(tw, e.Seq, ts, r.Mode+" check", e.Origin, r.Processed, r.Mismatched, r.MissingInTarget, r.ExtraInTarget,
							r.Expired, r.BytesMoved, r.Duration.Round(time.Millisecond), r.Source+" → "+r.Target)
					case e.Repair != nil:
						r := e.Repair
						cliutil.Row(tw, e.Seq, ts, "repair", e.User, len(r.Actions), "", "", "", "", "", "",
							fmt.Sprintf("%s: written %d deleted %d saved %d %s", r.State, r.Written, r.Deleted, r.Saved, e.Reason))
					default:
						cliutil.Row(tw, e.Seq, ts, "undo-repair", e.User, "", "", "", "", "", "", "", fmt.Sprint(e.Undo["run"]))
					}
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "newest runs to show (0: all)")
	return cmd
}

// openRecorded reopens a store as a journal recorded it: "n1,n2" is the
// union of the store on those nodes.
func openRecorded(c *erl.Client, nodes string, spec backends.Spec) (backends.Store, error) {
	var members []backends.Store
	for _, n := range strings.Split(nodes, ",") {
		s, err := backends.Open(c, n, spec)
		if err != nil {
			return nil, err
		}
		members = append(members, s)
	}
	if len(members) == 1 {
		return members[0], nil
	}
	return backends.NewUnion(members...)
}
