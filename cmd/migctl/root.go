package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/erlmcp/migctl/config"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
)

// app holds the global flags and what commands share. It is created per
// root command (no package state), so tests can run many in one process.
type app struct {
	in       io.Reader
	out, err io.Writer

	nodes      []string
	timeout    time.Duration
	output     string
	logLevel   string
	cookieFile string
	epmdPort   int
	journalAt  string
	configPath string

	cfg        *config.Config  // the --config file, when given
	fromConfig map[string]bool // flags whose value came from it

	format cliutil.Format
	log    *slog.Logger
	client *erl.Client
}

func newRootCmd(in io.Reader, out, errw io.Writer) *cobra.Command {
	a := &app{in: in, out: out, err: errw}
	root := &cobra.Command{
		Use:   "migctl",
		Short: "Migrate erlmcp's session store (ETS → DETS → Mnesia), check it, heal it",
		Long: `migctl moves the session store of a running erlmcp service from ETS to DETS
to a replicated Mnesia cluster without losing a session, proves that the
stores agree, and gets a split Mnesia cluster back together.

Nodes come from --nodes or MIGCTL_NODES (comma-separated). The Erlang cookie
is read from --cookie-file, MIGCTL_COOKIE_FILE, MIGCTL_COOKIE or
~/.erlang.cookie, never from the command line.

Exit codes: 0 ok, 1 failed, 2 bad input (nothing changed: an unknown
command or flag, a bad value), 3 node unreachable (any node the command
needs, even one of several), 4 check found problems, 5 refused (no --yes,
or a gate), 6 cluster degraded (cluster status), 7 cluster partitioned.
Each command's help lists the codes it returns.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setup(cmd)
		},
		PersistentPostRunE: func(cmd *cobra.Command, args []string) error {
			return a.close()
		},
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	f := root.PersistentFlags()
	f.StringSliceVar(&a.nodes, "nodes", splitEnv("MIGCTL_NODES"), "Erlang nodes, comma-separated (env MIGCTL_NODES)")
	f.DurationVar(&a.timeout, "timeout", envDuration("MIGCTL_TIMEOUT", 30*time.Second), "timeout of each call to a node (env MIGCTL_TIMEOUT)")
	f.StringVarP(&a.output, "output", "o", envOr("MIGCTL_OUTPUT", "table"), "output format: table or json (env MIGCTL_OUTPUT)")
	f.StringVar(&a.logLevel, "log-level", envOr("MIGCTL_LOG_LEVEL", "warn"), "log level: debug, info, warn, error (env MIGCTL_LOG_LEVEL)")
	f.StringVar(&a.cookieFile, "cookie-file", os.Getenv("MIGCTL_COOKIE_FILE"), "file holding the Erlang cookie (env MIGCTL_COOKIE_FILE)")
	f.IntVar(&a.epmdPort, "epmd-port", envInt("ERL_EPMD_PORT", erl.DefaultEPMDPort), "EPMD port on the nodes' hosts (env ERL_EPMD_PORT)")
	f.StringVar(&a.journalAt, "journal", journal.DefaultPath(), "migctl's journal file (env MIGCTL_JOURNAL)")
	f.StringVar(&a.configPath, "config", os.Getenv("MIGCTL_CONFIG"), "YAML configuration file; flags and MIGCTL_* variables override it (env MIGCTL_CONFIG)")

	root.AddCommand(newVersionCmd(a), newPingCmd(a), newSessionsCmd(a), newJournalCmd(a), newConfigCmd(a), newClusterCmd(a), newPhaseCmd(a), newBackfillCmd(a), newSchemaCmd(a), newTablesCmd(a), newArchiveCmd(a), newVerifyCmd(a), newConsistencyCmd(a), newDocsCmd(a))
	// The completion command exists before the first Execute, so that the
	// conventions below (and the tests that walk the tree) cover it too.
	root.InitDefaultCompletionCmd()
	usageErrors(root)
	documentExits(root)
	return root
}

func (a *app) setup(cmd *cobra.Command) error {
	if err := a.applyConfig(cmd); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return cliutil.Usage("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	a.log = slog.New(slog.NewTextHandler(a.err, &slog.HandlerOptions{Level: lvl}))
	// ergo logs through the standard logger; keep it off stdout and at
	// debug level so it never mixes with migctl's output.
	log.SetOutput(&slogWriter{a.log})
	log.SetFlags(0)
	fm, err := cliutil.ParseFormat(a.output)
	if err != nil {
		return err
	}
	a.format = fm
	var nodes []string
	for _, n := range a.nodes {
		if n = strings.TrimSpace(n); n != "" {
			if _, _, err := erl.SplitNode(n); err != nil {
				return cliutil.Usage("--nodes: %v", err)
			}
			nodes = append(nodes, n)
		}
	}
	a.nodes = nodes
	return nil
}

func (a *app) close() error {
	if a.client == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.client.Close(ctx)
	a.client = nil
	if err != nil {
		a.log.Warn("closing connections", "err", err)
	}
	return nil
}

// applyConfig loads --config and gives its values to every flag that was
// neither given on the command line nor set through its environment
// variable (precedence: flag, environment, file, default).
func (a *app) applyConfig(cmd *cobra.Command) error {
	if a.configPath == "" {
		return nil
	}
	c, err := config.Load(a.configPath)
	if err != nil {
		return cliutil.WithCode(cliutil.ExitUsage, err)
	}
	a.cfg = c
	vals := c.For(cmd.CommandPath())
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		b, ok := vals[f.Name]
		if !ok || f.Changed || (b.Env != "" && os.Getenv(b.Env) != "") {
			return
		}
		if err := f.Value.Set(b.Value); err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s: %w", a.configPath, f.Name, err))
			return
		}
		if a.fromConfig == nil {
			a.fromConfig = map[string]bool{}
		}
		a.fromConfig[f.Name] = true
	})
	if len(errs) > 0 {
		return cliutil.WithCode(cliutil.ExitUsage, errors.Join(errs...))
	}
	return nil
}

// needNodes returns the configured nodes or a usage error.
func (a *app) needNodes() ([]string, error) {
	if len(a.nodes) == 0 {
		return nil, cliutil.Usage("no nodes: pass --nodes n1@host,n2@host or set MIGCTL_NODES")
	}
	return a.nodes, nil
}

// erlClient starts the hidden Erlang node once per command.
func (a *app) erlClient(ctx context.Context) (*erl.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	cookie, src, err := erl.LoadCookie(a.cookieFile, os.Getenv)
	if err != nil {
		return nil, cliutil.WithCode(cliutil.ExitUsage, err)
	}
	a.log.Debug("cookie", "source", string(src))
	// The node lives until close(), not until Ctrl-C: cleanup (stopping
	// forwarders, unloading the agent) still needs it after a cancel.
	c, err := erl.Start(context.WithoutCancel(ctx), erl.Options{
		Cookie:   cookie,
		Host:     localHostFor(a.nodes),
		EPMDPort: a.epmdPort,
		Timeout:  a.timeout,
		Logger:   a.log,
	})
	if err != nil {
		return nil, err
	}
	a.client = c
	return c, nil
}

// localHostFor picks the host part of migctl's own node name: Erlang keeps
// long-name (host with dots, or an IP) and short-name clusters apart, so it
// must match the style of the targets.
func localHostFor(nodes []string) string {
	for _, n := range nodes {
		_, h, err := erl.SplitNode(n)
		if err != nil {
			continue
		}
		if strings.Contains(h, ".") || strings.Contains(h, ":") {
			return "127.0.0.1"
		}
		hn, err := os.Hostname()
		if err != nil || hn == "" {
			return "localhost"
		}
		short, _, _ := strings.Cut(hn, ".")
		return short
	}
	return "127.0.0.1"
}

// journal opens migctl's journal (--journal).
func (a *app) journal() (*journal.Journal, error) {
	return journal.Open(a.journalAt, journal.Options{})
}

type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)), "component", "ergo")
	return len(p), nil
}

func splitEnv(k string) []string {
	v := os.Getenv(k)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil && d > 0 {
		return d
	}
	return def
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}
