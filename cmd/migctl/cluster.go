package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/cluster/sshrun"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// clusterFlags are shared by the cluster subcommands.
type clusterFlags struct {
	tables  []string
	buckets int
}

func newClusterCmd(a *app) *cobra.Command {
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Mnesia cluster: status, verify replication, add/remove nodes, watch, heal a split brain",
		Long: `Look after the Mnesia cluster that holds erlmcp's sessions.

  status              every node's own view and the verdict (exit 0 healthy, 6 degraded, 7 partitioned)
  verify-replication  size and checksum of every node's local copy (exit 4 when they differ)
  add-node / remove-node
  resync              reload one node's copy from the others (after verify-replication names it)
  watch               Mnesia events from every node, views compared on a timer; metrics
  heal                --plan shows islands, evidence and the winner; --execute heals keeping both sides' writes
  restore-backup      put back the tables a heal backed up`,
	}
	f := cmd.PersistentFlags()
	f.StringSliceVar(&cf.tables, "tables", []string{backends.DefaultMnesiaTable}, "session tables (env MIGCTL_MNESIA_TABLE)")
	withEnv(f, "tables", "MIGCTL_MNESIA_TABLE")
	f.IntVar(&cf.buckets, "buckets", 0, "hash buckets for checksums (0: about 8 rows a bucket)")
	cmd.AddCommand(newClusterStatusCmd(a, &cf), newClusterVerifyCmd(a, &cf), newClusterAddNodeCmd(a, &cf),
		newClusterRemoveNodeCmd(a, &cf), newClusterResyncCmd(a, &cf), newClusterWatchCmd(a, &cf), newClusterHealCmd(a, &cf),
		newClusterRestoreCmd(a, &cf))
	return cmd
}

// open connects and returns the cluster handle.
func (cf *clusterFlags) open(ctx context.Context, a *app, extra ...string) (*cluster.Cluster, error) {
	nodes, err := a.needNodes()
	if err != nil {
		return nil, err
	}
	// The hidden node must outlive an interrupt: a cancelled command (a
	// watch stopped with Ctrl-C) still stops its forwarders and unloads
	// the agent on its way out, and those calls need the node. The calls
	// themselves still end with ctx.
	c, err := a.erlClient(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	return cluster.New(c, cluster.Options{Nodes: append(append([]string(nil), nodes...), extra...),
		Tables: cf.tables, Buckets: cf.buckets, Logger: a.log})
}

// verdictErr maps a verdict to the exit code (the status was printed).
func verdictErr(v cluster.Verdict) error {
	switch v {
	case cluster.Partitioned:
		return cliutil.WithCode(cliutil.ExitPartitioned, cliutil.ErrSilent)
	case cluster.Degraded:
		return cliutil.WithCode(cliutil.ExitDegraded, cliutil.ErrSilent)
	}
	return nil
}

func newClusterStatusCmd(a *app, cf *clusterFlags) *cobra.Command {
	var w watchFlag
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every node's own view of the cluster, and the verdict (exit 0 healthy, 6 degraded, 7 partitioned)",
		Example: `  migctl cluster status
  migctl cluster status --watch      # redrawn every 2s until Ctrl-C; exit 0
  migctl cluster status -o json | jq -r .verdict`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			return a.runWatch(cmd, w, func(ctx context.Context, out io.Writer, fm cliutil.Format) error {
				st, err := cl.Status(ctx)
				if err != nil {
					return err
				}
				if err := printStatus(out, fm, st); err != nil {
					return err
				}
				return verdictErr(st.Verdict)
			})
		},
	}
	w.add(cmd)
	return cmd
}

func printStatus(w io.Writer, f cliutil.Format, st *cluster.Status) error {
	return cliutil.Print(w, f, st, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "NODE", "REACHABLE", "MNESIA", "DB_NODES", "RUNNING_DB_NODES", "RECORDER", "TABLES")
		for _, v := range st.Nodes {
			rec := "-"
			switch r := v.Recorder; {
			case r == nil:
			case !r.Running:
				rec = "NOT RUNNING (a heal falls back to the rows' times)"
			default:
				var cov []string
				for _, t := range st.TableNames() {
					if since, ok := r.Since[t]; ok && since > 0 {
						cov = append(cov, fmt.Sprintf("%s since %s", t, msText(since)))
					} else {
						cov = append(cov, t+" NOT RECORDED")
					}
				}
				rec = fmt.Sprintf("%d keys, %s", r.Keys, strings.Join(cov, ", "))
			}
			var tabs []string
			for _, t := range v.Tables {
				s := fmt.Sprintf("%s(%s,%d rows,from %s)", t.Name, t.Storage, t.Size, t.LoadedFrom)
				if len(t.MasterNodes) > 0 {
					s += fmt.Sprintf("[masters %s]", strings.Join(t.MasterNodes, " "))
				}
				tabs = append(tabs, s)
			}
			cliutil.Row(tw, v.Node, yesNo(v.Reachable), v.Mnesia, len(v.DBNodes), strings.Join(v.RunningDBNodes, " "), rec, strings.Join(tabs, " "))
		}
		fmt.Fprintln(tw)
		cliutil.Row(tw, "VERDICT", strings.ToUpper(string(st.Verdict)))
		for i, is := range st.Islands {
			cliutil.Row(tw, fmt.Sprintf("island %d", i), strings.Join(is, " "))
		}
		for _, p := range st.Problems {
			cliutil.Row(tw, "problem", p)
		}
	})
}

func newClusterVerifyCmd(a *app, cf *clusterFlags) *cobra.Command {
	var table string
	var rechecks int
	var recheckDelay time.Duration
	cmd := &cobra.Command{
		Use:   "verify-replication",
		Short: "Size and checksum of every node's local copy; which nodes differ and by how many keys (exit 4)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			opts := cluster.VerifyOptions{Rechecks: rechecks, RecheckDelay: recheckDelay}
			if rechecks == 0 {
				opts.Rechecks = -1 // none
			}
			if table != "" {
				opts.Tables = []string{table}
			}
			rs, err := cl.VerifyReplication(cmd.Context(), opts)
			if err != nil {
				return err
			}
			ok := true
			for _, r := range rs {
				ok = ok && r.Consistent
			}
			w := cmd.OutOrStdout()
			if a.format == cliutil.JSON {
				if err := cliutil.Print(w, a.format, rs, nil); err != nil {
					return err
				}
			} else {
				for _, r := range rs {
					fmt.Fprint(w, r.Text())
				}
			}
			if !ok {
				// A copy that could not be read because its node is
				// unreachable was not compared: that is exit 3, not 4.
				for _, r := range rs {
					for _, n := range r.Nodes {
						if n.Error == "" {
							continue
						}
						if err := a.client.Connect(cmd.Context(), n.Node); err != nil {
							return cliutil.WithCode(cliutil.ExitUnreachable, fmt.Errorf("%w: %s: its copy was not compared: %w", cliutil.ErrSilent, n.Node, err))
						}
					}
				}
				return cliutil.WithCode(cliutil.ExitDifferences, cliutil.ErrSilent)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "check only this table")
	cmd.Flags().IntVar(&rechecks, "rechecks", cluster.DefaultRechecks,
		"read keys found different again this many times before reporting them (writes in flight make copies differ for a moment); 0 reports the first comparison")
	cmd.Flags().DurationVar(&recheckDelay, "recheck-delay", cluster.DefaultRecheckDelay, "pause before each recheck")
	return cmd
}

// changeFlags are --dry-run, --yes, --reason.
type changeFlags struct {
	dryRun bool
	yes    bool
	reason string
}

func (c *changeFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&c.dryRun, "dry-run", false, "print the plan, change nothing")
	cmd.Flags().BoolVar(&c.yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&c.reason, "reason", "", "why (journaled)")
}

func newClusterAddNodeCmd(a *app, cf *clusterFlags) *cobra.Command {
	var ch changeFlags
	cmd := &cobra.Command{
		Use:   "add-node NODE",
		Short: "Join NODE: extra_db_nodes, schema and session tables as disc_copies, wait until loaded, verify",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.membership(cmd, cf, ch, args[0], "add", cluster.MembershipOptions{})
		},
	}
	ch.add(cmd)
	return cmd
}

func newClusterRemoveNodeCmd(a *app, cf *clusterFlags) *cobra.Command {
	var ch changeFlags
	cmd := &cobra.Command{
		Use:   "remove-node NODE",
		Short: "Remove NODE: drop its table copies, stop its Mnesia, drop it from the schema, verify",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.membership(cmd, cf, ch, args[0], "remove", cluster.MembershipOptions{})
		},
	}
	ch.add(cmd)
	return cmd
}

func newClusterResyncCmd(a *app, cf *clusterFlags) *cobra.Command {
	var ch changeFlags
	var backupDir string
	cmd := &cobra.Command{
		Use:   "resync NODE",
		Short: "Reload NODE's copy of the session tables from the other nodes (after verify-replication names it), backing it up first",
		Long: `For a healthy cluster in which verify-replication reports one node's copy
different from the others (Mnesia itself sees nothing wrong). The node's copy
is exported to --backup-dir first (restore-backup puts rows back), then its
Mnesia is stopped with the other nodes as master nodes and started again,
so its tables load from them; master nodes are cleared and the replicas
verified. The application's writes on NODE fail while its Mnesia is down:
drain it first. A node whose Mnesia is stopped is started first. A split
cluster is refused: that is what heal is for.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if backupDir == "" {
				backupDir = filepath.Join(filepath.Dir(a.journalAt), "backups")
			}
			return a.membership(cmd, cf, ch, args[0], "resync", cluster.MembershipOptions{BackupDir: backupDir})
		},
	}
	ch.add(cmd)
	cmd.Flags().StringVar(&backupDir, "backup-dir", "", "where the node's copy is backed up (default: backups/ beside the journal)")
	return cmd
}

func (a *app) membership(cmd *cobra.Command, cf *clusterFlags, ch changeFlags, node, verb string, opts cluster.MembershipOptions) error {
	ctx := cmd.Context()
	cl, err := cf.open(ctx, a)
	if err != nil {
		return err
	}
	op := map[string]func(context.Context, string, cluster.MembershipOptions) (*cluster.MembershipReport, error){
		"add": cl.AddNode, "remove": cl.RemoveNode, "resync": cl.ResyncNode}[verb]
	dry := opts
	dry.DryRun = true
	plan, err := op(ctx, node, dry)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if ch.dryRun {
		return cliutil.Print(w, a.format, plan, func(tw *tabwriter.Writer) {
			for i, s := range plan.Plan {
				cliutil.Row(tw, fmt.Sprintf("%d.", i+1), s)
			}
		})
	}
	if a.format != cliutil.JSON {
		for i, s := range plan.Plan {
			fmt.Fprintf(w, "%d. %s\n", i+1, s)
		}
	}
	if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("%s %s?", verb, node)); err != nil {
		return err
	}
	j, err := a.journal()
	if err != nil {
		return err
	}
	opts.Journal, opts.Reason = j, ch.reason
	rep, err := op(ctx, node, opts)
	if rep != nil {
		if perr := cliutil.Print(w, a.format, rep, func(tw *tabwriter.Writer) {
			for _, d := range rep.Done {
				cliutil.Row(tw, "done", d)
			}
			for _, b := range rep.Backups {
				cliutil.Row(tw, "backup", b.File, b.Count)
			}
			for _, r := range rep.Verify {
				cliutil.Row(tw, "verify", strings.TrimSpace(strings.ReplaceAll(r.Text(), "\n", "; ")))
			}
		}); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func newClusterWatchCmd(a *app, cf *clusterFlags) *cobra.Command {
	var interval time.Duration
	var metricsAddr string
	var all bool
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Follow Mnesia events on every node and compare views on a timer; report splits at once",
		Long: `Starts an event forwarder on every node (it exits when migctl goes away),
re-reads every node's view on each Mnesia event and every --interval, and
prints a line whenever the verdict or the islands change (--all: every
evaluation). With --metrics-addr (formerly --listen's twin; one name
now) it serves Prometheus metrics
(migctl_mnesia_partitioned, migctl_mnesia_islands, ...) on /metrics.
Runs until interrupted; exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, err := cf.open(ctx, a)
			if err != nil {
				return err
			}
			var mu sync.Mutex
			var last *cluster.Status
			if metricsAddr != "" {
				ln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return cliutil.Usage("--metrics-addr: %v", err)
				}
				srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					st := last
					mu.Unlock()
					if st == nil {
						http.Error(w, "no evaluation yet", http.StatusServiceUnavailable)
						return
					}
					w.Header().Set("Content-Type", "text/plain; version=0.0.4")
					_ = cluster.WriteMetrics(w, st)
				})}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				a.log.Info("serving metrics", "addr", ln.Addr().String())
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			return cl.Watch(ctx, cluster.WatchOptions{
				Interval: interval,
				OnEvent: func(e cluster.Event) {
					if a.format == cliutil.JSON {
						_ = enc.Encode(map[string]any{"event": e})
					} else if e.Kind != "subscribed" {
						fmt.Fprintf(out, "%s event %s on %s %s\n", e.Time.Format(time.RFC3339Nano), e.Kind, e.Node, e.Peer)
					}
				},
				OnReport: func(r cluster.WatchReport) {
					mu.Lock()
					last = r.Status
					mu.Unlock()
					if !r.Changed && !all {
						return
					}
					if a.format == cliutil.JSON {
						_ = enc.Encode(map[string]any{"report": r})
						return
					}
					fmt.Fprintf(out, "%s %s (%s) islands %s\n", r.Time.Format(time.RFC3339Nano), strings.ToUpper(string(r.Status.Verdict)), r.Trigger, islandsText(r.Status.Islands))
					for _, p := range r.Status.Problems {
						fmt.Fprintf(out, "  %s\n", p)
					}
				},
			})
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "compare views at least this often")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics here, e.g. 127.0.0.1:9465")
	deprecatedAlias(cmd.Flags(), "listen", "metrics-addr")
	cmd.Flags().BoolVar(&all, "all", false, "print every evaluation, not only changes")
	return cmd
}

func newClusterHealCmd(a *app, cf *clusterFlags) *cobra.Command {
	var ch changeFlags
	var plan, execute bool
	var winner, splitAt, keepWindow, backupDir, sshConfig, resume, stopAfter, planFile string
	var sshNodes []string
	var fenceTimeout time.Duration
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
			if stopAfter != "" && !slices.Contains(cluster.HealSteps(), stopAfter) {
				return cliutil.Usage("--stop-after %q: not a step of the heal (%s)", stopAfter, strings.Join(cluster.HealSteps(), ", "))
			}
			hook, err := failpoint(cmd.Context(), os.Getenv("MIGCTL_FAILPOINT"), a.err)
			if err != nil {
				return cliutil.WithCode(cliutil.ExitUsage, err)
			}
			if resume != "" {
				if plan || execute || planFile != "" {
					return cliutil.Usage("--resume goes alone (the plan is in the journal)")
				}
				return a.resumeHeal(cmd, cf, ch, resume, stopAfter, hook, fenceTimeout)
			}
			if plan == execute {
				return cliutil.Usage("give exactly one of --plan, --execute and --resume")
			}
			if planFile != "" && !execute {
				return cliutil.Usage("--plan-file goes with --execute (write one with --plan -o json)")
			}
			if planFile != "" && (winner != "" || splitAt != "" || keepWindow != "auto") {
				return cliutil.Usage("--plan-file carries its own winner, split time and keep window")
			}
			var sa time.Time
			if splitAt != "" {
				t, err := time.Parse(time.RFC3339Nano, splitAt)
				if err != nil {
					return cliutil.Usage("--split-at: %v (want RFC 3339, e.g. 2026-11-28T01:02:03Z)", err)
				}
				sa = t
			}
			kw, err := parseKeepWindow(keepWindow)
			if err != nil {
				return err
			}
			var oob cluster.OutOfBand
			if sshConfig != "" || (a.cfg != nil && a.cfg.SSH != nil) {
				var c sshrun.Config
				if sshConfig != "" {
					var err error
					if c, err = sshrun.LoadConfig(sshConfig); err != nil {
						return cliutil.WithCode(cliutil.ExitUsage, err)
					}
				} else {
					c = *a.cfg.SSH // the ssh section of --config
				}
				r, err := sshrun.New(c, a.log)
				if err != nil {
					return cliutil.WithCode(cliutil.ExitUsage, err)
				}
				oob = r
			} else if len(sshNodes) > 0 {
				return cliutil.Usage("--ssh-nodes needs --ssh-config or an ssh section in --config")
			}
			ctx := cmd.Context()
			cl, err := cf.open(ctx, a)
			if err != nil {
				return err
			}
			var p *cluster.Plan
			if planFile != "" {
				p, err = readPlanFile(ctx, cl, planFile)
			} else {
				p, err = cl.Plan(ctx, cluster.PlanOptions{Winner: winner, SplitAt: sa, OutOfBand: sshNodes, KeepWindow: kw})
			}
			if errors.Is(err, cluster.ErrPlanStale) {
				return fmt.Errorf("%w; make a new plan with --plan", err)
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if plan {
				return printPlan(w, a.format, p)
			}
			if backupDir == "" {
				backupDir = filepath.Join(filepath.Dir(a.journalAt), "backups")
			}
			opts := cluster.ExecuteOptions{Reason: ch.reason, BackupDir: backupDir, DryRun: ch.dryRun,
				OutOfBand: oob, OutOfBandNodes: sshNodes, StopAfter: stopAfter, StepHook: hook, FenceTimeout: fenceTimeout}
			if ch.dryRun {
				rep, err := cl.Execute(ctx, p, opts)
				if err != nil {
					return err
				}
				return printHeal(w, a.format, p, rep)
			}
			if a.format != cliutil.JSON {
				if err := printPlan(w, a.format, p); err != nil {
					return err
				}
			}
			if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("heal: %s win, %s reload from them?", cliutil.Cell(p.WinnerNodes()), cliutil.Cell(p.LoserNodes()))); err != nil {
				return err
			}
			j, err := a.journal()
			if err != nil {
				return err
			}
			opts.Journal = j
			rep, err := cl.Execute(ctx, p, opts)
			if rep != nil {
				if perr := printHeal(w, a.format, p, rep); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	ch.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&plan, "plan", false, "show the plan and the evidence; change nothing")
	f.BoolVar(&execute, "execute", false, "heal")
	f.StringVar(&winner, "winner", "", "a node of the island that must win (default: largest island, then latest write)")
	f.StringVar(&splitAt, "split-at", "", "time of the split if known (RFC 3339); default: estimated from the data")
	f.StringVar(&keepWindow, "keep-window", "auto", "how long before the split a row on one side only is kept, not taken for a deletion: auto (1.25 × net_ticktime + 2 s), a duration, or off")
	f.StringVar(&backupDir, "backup-dir", "", "where the losers' tables are backed up (default: backups/ beside the journal)")
	f.StringVar(&sshConfig, "ssh-config", "", "SSH configuration (JSON) for out-of-band restarts")
	f.StringSliceVar(&sshNodes, "ssh-nodes", nil, "losing nodes to restart over SSH instead of in band")
	f.StringVar(&resume, "resume", "", "continue an interrupted heal by its id (see restore-backup --list)")
	f.StringVar(&stopAfter, "stop-after", "", "stop after this step ("+strings.Join(cluster.HealSteps(), ", ")+"); --resume goes on")
	f.DurationVar(&fenceTimeout, "fence-timeout", 5*time.Minute, "the longest the losers' writers are held; past it the fence lifts by itself and the heal stops before the reload (resume)")
	f.StringVar(&planFile, "plan-file", "", "with --execute: carry out exactly this plan (written by --plan -o json); refused if the islands changed since")
	return cmd
}

// readPlanFile reads a plan written by --plan -o json and checks that the
// cluster is still split the way it saw (cluster.ErrPlanStale if not).
func readPlanFile(ctx context.Context, cl *cluster.Cluster, file string) (*cluster.Plan, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, cliutil.WithCode(cliutil.ExitUsage, err)
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

func (a *app) resumeHeal(cmd *cobra.Command, cf *clusterFlags, ch changeFlags, id, stopAfter string, hook func(string) error, fenceTimeout time.Duration) error {
	ctx := cmd.Context()
	open := a.existingJournal
	if ch.dryRun {
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
	i := slices.IndexFunc(hs, func(h cluster.HealRecord) bool { return h.ID == id })
	switch {
	case i < 0:
		return cliutil.Usage("--resume %q: no such heal in the journal %s (see cluster restore-backup --list)", id, j.Path())
	case hs[i].Completed:
		return cliutil.WithCode(cliutil.ExitRefused, fmt.Errorf("--resume %q: that heal completed, nothing to resume", id))
	}
	cl, err := cf.open(ctx, a)
	if err != nil {
		return err
	}
	opts := cluster.ExecuteOptions{Journal: j, Reason: ch.reason, StopAfter: stopAfter, StepHook: hook, FenceTimeout: fenceTimeout}
	// The steps left, from the journal alone: what --dry-run prints, and
	// what the operator sees before agreeing.
	dry := opts
	dry.DryRun = true
	plan, err := cl.Resume(ctx, id, dry)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if ch.dryRun {
		return printHeal(w, a.format, nil, plan)
	}
	if a.format != cliutil.JSON {
		if err := printHeal(w, a.format, nil, plan); err != nil {
			return err
		}
	}
	if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("resume heal %s: %s win, %s reload from them?", id, cliutil.Cell(plan.Winner), cliutil.Cell(plan.Losers))); err != nil {
		return err
	}
	rep, err := cl.Resume(ctx, id, opts)
	if rep != nil {
		if perr := printHeal(w, a.format, nil, rep); perr != nil && err == nil {
			err = perr
		}
	}
	return err
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

func newClusterRestoreCmd(a *app, cf *clusterFlags) *cobra.Command {
	var ch changeFlags
	var node, mode, table string
	var list bool
	cmd := &cobra.Command{
		Use:   "restore-backup [FILE]",
		Short: "Put back a table a heal backed up (--list shows heals and their backups)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if list {
				j, err := a.readJournal()
				if err != nil {
					return err
				}
				hs, err := cluster.ListHeals(j)
				if err != nil {
					return err
				}
				return cliutil.Print(w, a.format, hs, func(tw *tabwriter.Writer) {
					cliutil.Row(tw, "HEAL", "COMPLETED", "STEPS DONE", "BACKUP")
					for _, h := range hs {
						for _, b := range h.Backups {
							cliutil.Row(tw, h.ID, h.Completed, strings.Join(h.Done, ","), b.File)
						}
						if len(h.Backups) == 0 {
							cliutil.Row(tw, h.ID, h.Completed, strings.Join(h.Done, ","), "-")
						}
					}
				})
			}
			if len(args) != 1 {
				return cliutil.Usage("give the backup FILE (see --list)")
			}
			pm := backends.PutMode(mode)
			switch pm {
			case backends.IfNewer, backends.IfAbsent, backends.Overwrite:
			default:
				return cliutil.Usage("--mode %q: want if_newer, if_absent or overwrite", mode)
			}
			if node == "" {
				nodes, err := a.needNodes()
				if err != nil {
					return err
				}
				node = nodes[0]
			}
			ctx := cmd.Context()
			cl, err := cf.open(ctx, a)
			if err != nil {
				return err
			}
			opts := cluster.RestoreOptions{Mode: pm, Table: table, Reason: ch.reason, DryRun: true}
			res, err := cl.RestoreBackup(ctx, args[0], node, opts)
			if err != nil {
				return err
			}
			if !ch.dryRun {
				if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("restore %d sessions into %s through %s (%s)?", res.Count, res.Table, node, pm)); err != nil {
					return err
				}
				j, err := a.journal()
				if err != nil {
					return err
				}
				opts.DryRun, opts.Journal = false, j
				if res, err = cl.RestoreBackup(ctx, args[0], node, opts); err != nil {
					return err
				}
			}
			return cliutil.Print(w, a.format, res, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "file", res.File)
				cliutil.Row(tw, "sessions", res.Count)
				cliutil.Row(tw, "into", res.Table+" via "+res.Node)
				if res.DryRun {
					cliutil.Row(tw, "dry run", "nothing written")
				} else {
					cliutil.Row(tw, "written", res.Result.Written)
					cliutil.Row(tw, "skipped", res.Result.Skipped)
				}
			})
		},
	}
	ch.add(cmd)
	cmd.Flags().StringVar(&node, "node", "", "node to write through (default: the first of --nodes)")
	cmd.Flags().StringVar(&mode, "mode", string(backends.IfNewer), "if_newer (a backup row replaces only an older one), if_absent, overwrite")
	cmd.Flags().StringVar(&table, "table", "", "table to restore into (default: the one in the file)")
	cmd.Flags().BoolVar(&list, "list", false, "list heals in the journal and their backup files")
	return cmd
}

// islandsText is "a, b | c": each island's nodes, islands apart.
func islandsText(islands [][]string) string {
	parts := make([]string, len(islands))
	for i, is := range islands {
		parts[i] = cliutil.Cell(is)
	}
	return strings.Join(parts, " | ")
}
