package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
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
				// The verdict (printed above): the copies differ.
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
