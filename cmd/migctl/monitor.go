package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/alerting"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/metricsserver"
	"github.com/erlmcp/migctl/migrate"
)

// MonitorCommand is `migctl consistency monitor`, the daemon around
// consistency.Monitor. The library runs the checks and keeps the results;
// this command wires what a daemon owns: the /metrics and /healthz server
// (metricsserver), the Alertmanager client (alerting), the cluster watch
// on the same registry, and the exit status at the end. Each step is a
// method, so each can be read (and tested) alone: config, wire, serve,
// stop, verdict.
type MonitorCommand struct {
	app   *app
	cmd   *cobra.Command // for pairFlags.options (was --sample given?)
	pairs pairFlags

	Duration        time.Duration // --duration: from the FIRST start; 0 runs until stopped
	Interval        time.Duration // --interval
	Retention       time.Duration // --history-retention (0: keep every record)
	Incremental     bool          // --incremental
	FullInterval    time.Duration // --full-interval
	AlertOnMismatch bool          // --alert-on-mismatch
	AlertWebhook    string        // --alert-webhook: Alertmanager
	MetricsAddr     string        // --metrics-addr ("" serves nothing)
	Name            string        // --name in the journal
	CallsPerSecond  float64       // --calls-per-second
	WatchCluster    bool          // --watch-cluster
}

func newConsistencyMonitorCmd(a *app) *cobra.Command {
	c := &MonitorCommand{app: a}
	c.cmd = &cobra.Command{
		Use:   "monitor --source dets --target mnesia --duration 14d --interval 5m --sample 10000 --alert-on-mismatch",
		Short: "Check the stores periodically, serve /metrics and /healthz, alert on new mismatches; exit 4 at the end if any were seen",
		Long: `monitor is the runbook's phase1 watch: a sample check every --interval until
--duration has passed since the monitor FIRST started (it continues after a
restart, from the journal). It serves Prometheus metrics and /healthz on
--metrics-addr, alerts on every new mismatch once (a log line, and Alertmanager's
POST /api/v2/alerts on --alert-webhook), keeps its history in the journal,
paces its calls and backs off when the nodes are busy. SIGTERM (systemctl
stop) or Ctrl-C stops it within seconds with exit 0, whatever it saw: the
verdict so far is in the journal (migctl consistency history) and in
/metrics. Only a run that reaches --duration exits 4 for mismatches. deploy/ has the alert rules, a Grafana dashboard and a
systemd unit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.Run(cmd.Context()) },
	}
	c.addFlags()
	return c.cmd
}

func (c *MonitorCommand) addFlags() {
	c.pairs.addFlags(c.cmd, 10000)
	f := c.cmd.Flags()
	f.Var(dayDuration{&c.Duration}, "duration", "stop this long after the monitor first started, e.g. 14d; 0: run until stopped")
	f.DurationVar(&c.Interval, "interval", 5*time.Minute, "time between checks")
	c.Retention = consistency.DefaultRetention
	f.Var(dayDuration{&c.Retention}, "history-retention", "delete the journal's check records older than this, e.g. 30d (a record is ~4 KB: ~35 MB a day at --interval 10s); 0 keeps them all")
	f.BoolVar(&c.Incremental, "incremental", false, "verify only the sessions changed since the last cycle (Mnesia's change record), with a full check every --full-interval and after any gap in the record")
	f.DurationVar(&c.FullInterval, "full-interval", 24*time.Hour, "with --incremental: time between full checks")
	f.BoolVar(&c.AlertOnMismatch, "alert-on-mismatch", false, "alert (log line, and --alert-webhook) once per new mismatch")
	f.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9464", "address of /metrics and /healthz (\"\": none) (env MIGCTL_METRICS_ADDR, or the older MIGCTL_MONITOR_LISTEN)")
	withEnv(f, "metrics-addr", "MIGCTL_METRICS_ADDR", "MIGCTL_MONITOR_LISTEN")
	deprecatedAlias(f, "listen", "metrics-addr")
	f.StringVar(&c.AlertWebhook, "alert-webhook", "", "Alertmanager URL (alerts are POSTed to URL/api/v2/alerts) (env MIGCTL_ALERT_WEBHOOK)")
	withEnv(f, "alert-webhook", "MIGCTL_ALERT_WEBHOOK")
	f.StringVar(&c.Name, "name", "", "monitor name in the journal (default: SOURCE→TARGET)")
	f.Float64Var(&c.CallsPerSecond, "calls-per-second", 20, "most calls per second to the nodes")
	f.BoolVar(&c.WatchCluster, "watch-cluster", false, "also watch the Mnesia cluster of --nodes, as `migctl cluster watch` does, and serve its migctl_mnesia_* metrics on the same /metrics")
}

// Run runs the monitor until ctx is cancelled (a signal) or its duration
// ends.
func (c *MonitorCommand) Run(ctx context.Context) error {
	cfg, j, err := c.config(ctx)
	if err != nil {
		return err
	}
	var srv *metricsserver.Server // set by serve, read by the alert hook
	cfg.OnMismatch = c.alerter(func() string {
		if srv == nil {
			return ""
		}
		return srv.URL()
	})
	mon, err := consistency.NewMonitor(cfg)
	if err != nil {
		// config always sets what NewMonitor requires: a refusal here is
		// a bug (1), not bad input.
		return err
	}
	stopWatch, err := c.wire(ctx, mon, j)
	if err != nil {
		return err
	}
	defer stopWatch()
	if err := mon.Open(ctx); err != nil {
		return err
	}
	if srv, err = c.serve(mon); err != nil {
		return err
	}
	runErr := mon.Run(ctx)
	c.stop(mon, srv)
	return c.verdict(ctx, mon.State(), runErr)
}

// config checks the flags, opens the journal and the stores, and builds
// the library's configuration (without the alert hook).
func (c *MonitorCommand) config(ctx context.Context) (consistency.MonitorConfig, *journal.Journal, error) {
	a := c.app
	o, sk, tk, err := c.pairs.options(c.cmd)
	if err != nil {
		return consistency.MonitorConfig{}, nil, err
	}
	if c.Interval <= 0 {
		return consistency.MonitorConfig{}, nil, cliutil.Usage("--interval must be positive")
	}
	if c.Duration < 0 {
		return consistency.MonitorConfig{}, nil, cliutil.Usage("--duration must not be negative")
	}
	if c.Retention < 0 {
		return consistency.MonitorConfig{}, nil, cliutil.Usage("--history-retention must not be negative (0 keeps every record)")
	}
	retention := c.Retention
	if retention == 0 {
		retention = -1 // the library's "keep every record"
	}
	j, err := a.journal()
	if err != nil {
		return consistency.MonitorConfig{}, nil, err
	}
	src, tgt, err := c.pairs.open(ctx, a, sk, tk)
	if err != nil {
		return consistency.MonitorConfig{}, nil, err
	}
	o.Client, o.Log = a.client, a.log
	return consistency.MonitorConfig{Source: src, Target: tgt, Journal: j, Name: c.Name,
		Duration: c.Duration, Interval: c.Interval, Retention: retention, Sample: o.Sample, Full: c.pairs.full,
		AlertOnMismatch: c.AlertOnMismatch, Check: o, CallsPerSecond: c.CallsPerSecond, Log: a.log,
		Incremental: c.Incremental, FullInterval: c.FullInterval, Phases: c.phases(j)}, j, nil
}

// phases reads every node's migration phase and hybrid counters for the
// monitor's migctl_node_migration_phase and migctl_hybrid_events; nil
// (no such series) when the migration controller cannot be made.
func (c *MonitorCommand) phases(j *journal.Journal) func(context.Context) (map[string]consistency.NodeMigration, error) {
	a := c.app
	mg, err := migrate.New(migrate.Config{Client: a.client, Nodes: a.nodes, Journal: j, Logger: a.log})
	if err != nil {
		return nil
	}
	return func(ctx context.Context) (map[string]consistency.NodeMigration, error) {
		st, err := mg.ShowPhase(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]consistency.NodeMigration{}
		for _, n := range st.Nodes {
			if n.Reachable && n.Installed {
				out[n.Node] = consistency.NodeMigration{Phase: n.Phase.String(), Counters: n.Counters}
			}
		}
		return out, nil
	}
}

// alerter is the monitor's OnMismatch: each new mismatch goes to
// Alertmanager (--alert-webhook), its generatorURL this daemon's /metrics.
// The library already logged the alert; a failed post is logged here and
// does not stop the monitor. nil without --alert-webhook.
func (c *MonitorCommand) alerter(generatorURL func() string) func(context.Context, consistency.MismatchAlert) {
	if c.AlertWebhook == "" {
		return nil
	}
	am := alerting.New(c.AlertWebhook, nil)
	log := c.app.log
	return func(ctx context.Context, a consistency.MismatchAlert) {
		if err := am.Post(ctx, a.Alertmanager(generatorURL())); err != nil {
			log.Error("alert webhook", "url", c.AlertWebhook, "err", err)
		}
	}
}

// wire adds to the monitor's registry what the CLI knows of: the backfill's
// progress (the backfill runs in the CLI, which Prometheus does not scrape;
// its progress is in the journal this monitor shares) and, with
// --watch-cluster, the Mnesia cluster's series. The returned stop ends the
// watch.
func (c *MonitorCommand) wire(ctx context.Context, mon *consistency.Monitor, j *journal.Journal) (func(), error) {
	mon.Registry().MustRegister(migrate.NewBackfillCollector(j, c.app.log))
	if !c.WatchCluster {
		return func() {}, nil
	}
	return c.app.watchClusterInto(ctx, mon.Registry())
}

// serve starts /metrics and /healthz on --metrics-addr (nil: none).
// /healthz is 503 while the last check failed.
func (c *MonitorCommand) serve(mon *consistency.Monitor) (*metricsserver.Server, error) {
	if c.MetricsAddr == "" {
		return nil, nil
	}
	srv, err := metricsserver.Start(metricsserver.Options{Addr: c.MetricsAddr, Registry: mon.Registry(), Log: c.app.log,
		Health: func() (any, bool) {
			h := mon.Health()
			return h, h.Status == "ok"
		}})
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	c.app.log.Info("serving metrics", "addr", srv.Addr())
	return srv, nil
}

// stop waits for the monitor and shuts the server down, within 5 s: a
// systemd stop must not hang on a scrape in flight.
func (c *MonitorCommand) stop(mon *consistency.Monitor, srv *metricsserver.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mon.Close(ctx); err != nil {
		c.app.log.Warn("closing the monitor", "err", err)
	}
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			c.app.log.Warn("closing the monitor", "err", err)
		}
	}
}

// verdict is the exit status of a run that ended.
func (c *MonitorCommand) verdict(ctx context.Context, st consistency.MonitorState, runErr error) error {
	// Stopped by a signal (systemctl stop, Ctrl-C): exit 0 whatever it
	// saw. The verdict so far is in the journal (consistency history) and
	// was in /metrics; a 4 here would leave the unit "failed" after a
	// routine stop, and a wrapper could not tell a stop from a finished run.
	stopped := ctx.Err() != nil
	c.app.log.Info("monitor stopped", "by_signal", stopped, "checks", st.Checks, "mismatches", st.Mismatches, "first_start", st.FirstStart)
	if stopped {
		if errors.Is(runErr, context.Canceled) {
			runErr = nil
		}
		return runErr
	}
	if runErr == nil && st.Mismatches > 0 {
		// A verdict, not an error of a library (so not in the exit-code
		// table): the runbook's wrapper runs the monitor for its duration
		// and then tests the exit status; mismatches seen during the run
		// make it fail, like a check that finds them.
		return cliutil.WithCode(cliutil.ExitDifferences, fmt.Errorf("%d mismatches seen during the monitor's run (see migctl consistency history)", st.Mismatches))
	}
	return runErr
}
