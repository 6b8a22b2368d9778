package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/probe"
)

func newProbeCmd(a *app) *cobra.Command {
	var o probe.Options
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Look at what each node's session processes are doing (store server, DETS server, Mnesia, recorder): for client timeouts",
		Long: `Look at what each node's session processes are doing, a few times a
second for --duration: the session store server (every client call goes
through it), the DETS server of the session file, Mnesia's transaction
manager and migctl's change recorder. For each: how often it was busy,
its message queue (median, 95th percentile, largest) and where it was
most often (its first stack frame outside the generic server loops;
"idle" when waiting with nothing queued).

Use it when clients time out or slow down during a step (a backfill, a
check, a heal): a store server with a queue and a place that is not
erlmcp's own call is what they wait on. Nothing on the nodes changes.`,
		Example: `  migctl probe --duration 30s
  migctl probe --duration 2m --interval 100ms -o json > probe.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Duration <= 0 || o.Duration > 24*time.Hour {
				return cliutil.Usage("--duration must be positive and at most 24h, got %s", o.Duration)
			}
			if o.Interval < 10*time.Millisecond || o.Interval > time.Minute {
				return cliutil.Usage("--interval must be between 10ms and 1m, got %s", o.Interval)
			}
			nodes, err := a.needNodes()
			if err != nil {
				return err
			}
			c, err := a.erlClient(cmd.Context())
			if err != nil {
				return err
			}
			o.Log = a.log
			var prog *cliutil.Progress
			if o.Duration >= 3*time.Second {
				prog = cliutil.NewProgress(cmd.ErrOrStderr(), a.log, "probe (seconds)", int64(o.Duration/time.Second))
				var shown int64
				o.Progress = func(done, _ time.Duration) {
					s := int64(done / time.Second)
					prog.Add(s - shown)
					shown = s
				}
			}
			rep, runErr := probe.Run(cmd.Context(), agentapi.Migrate{C: c}, nodes, o)
			if prog != nil {
				prog.Done()
			}
			if rep == nil {
				return runErr
			}
			err = cliutil.Print(cmd.OutOrStdout(), a.format, rep, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "NODE", "PROCESS", "LOOKS", "BUSY", "QUEUE p50/p95/max", "WHERE (share of looks)")
				for _, p := range rep.Procs {
					var where []string
					for _, pl := range p.Top {
						where = append(where, fmt.Sprintf("%s %.0f%%", pl.Where, 100*pl.Share))
					}
					cliutil.Row(tw, p.Node, p.Proc, p.Looks, fmt.Sprintf("%.0f%%", 100*p.BusyPart),
						fmt.Sprintf("%d/%d/%d", p.QueueP50, p.QueueP95, p.QueueMax), strings.Join(where, ", "))
				}
				for _, e := range rep.Errors {
					cliutil.Row(tw, e.Node, "-", 0, "-", "-", "error: "+e.Error)
				}
			})
			if err != nil {
				return err
			}
			if len(rep.Errors) > 0 {
				return cliutil.WithCode(cliutil.ExitUnreachable, fmt.Errorf("%w: %s could not be looked at", cliutil.ErrSilent, rep.Errors[0].Node))
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to look")
	f.DurationVar(&o.Interval, "interval", 200*time.Millisecond, "time between two looks at a node")
	f.StringVar(&o.DetsTable, "dets-table", backends.DefaultDETSTable, "DETS session table whose server is looked at (env MIGCTL_DETS_TABLE)")
	withEnv(f, "dets-table", "MIGCTL_DETS_TABLE")
	f.IntVar(&o.Top, "top", 3, "places to show per process")
	return cmd
}
