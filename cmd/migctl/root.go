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
	logFormat  string
	cookieFile string
	epmdPort   int
	journalAt  string
	configPath string

	cfg        *config.Config  // the --config file, when given
	fromConfig map[string]bool // flags whose value came from it
	fromEnv    map[string]bool // flags whose value came from their variable

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
needs, even one of several, or its DETS table still opening after a
crash: retry), 4 check found problems, 5 refused (no --yes,
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
	f.StringSliceVar(&a.nodes, "nodes", nil, "Erlang nodes, comma-separated (env MIGCTL_NODES)")
	withEnv(f, "nodes", "MIGCTL_NODES")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of each call to a node (env MIGCTL_TIMEOUT)")
	withEnv(f, "timeout", "MIGCTL_TIMEOUT")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json (env MIGCTL_OUTPUT)")
	withEnv(f, "output", "MIGCTL_OUTPUT")
	f.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn, error; progress, pauses and heal steps print whatever the level (env MIGCTL_LOG_LEVEL)")
	withEnv(f, "log-level", "MIGCTL_LOG_LEVEL")
	f.StringVar(&a.logFormat, "log-format", "text", "log format on stderr: text or json (one JSON object a line, for journald or a log shipper) (env MIGCTL_LOG_FORMAT)")
	withEnv(f, "log-format", "MIGCTL_LOG_FORMAT")
	f.StringVar(&a.cookieFile, "cookie-file", "", "file holding the Erlang cookie (env MIGCTL_COOKIE_FILE)")
	withEnv(f, "cookie-file", "MIGCTL_COOKIE_FILE")
	f.IntVar(&a.epmdPort, "epmd-port", erl.DefaultEPMDPort, "EPMD port on the nodes' hosts (env ERL_EPMD_PORT)")
	withEnv(f, "epmd-port", "ERL_EPMD_PORT")
	f.StringVar(&a.journalAt, "journal", journal.DefaultPath(), "migctl's journal file (env MIGCTL_JOURNAL)")
	f.StringVar(&a.configPath, "config", "", "YAML configuration file; flags and MIGCTL_* variables override it (env MIGCTL_CONFIG)")
	withEnv(f, "config", "MIGCTL_CONFIG")
	withEnv(f, "journal", "MIGCTL_JOURNAL")

	root.AddCommand(newVersionCmd(a), newPingCmd(a), newSessionsCmd(a), newJournalCmd(a), newConfigCmd(a), newClusterCmd(a), newPhaseCmd(a), newBackfillCmd(a), newSchemaCmd(a), newTablesCmd(a), newArchiveCmd(a), newVerifyCmd(a), newConsistencyCmd(a), newDocsCmd(a), newProbeCmd(a))
	// The completion command exists before the first Execute, so that the
	// conventions below (and the tests that walk the tree) cover it too.
	root.InitDefaultCompletionCmd()
	root.SetHelpCommand(helpCommand(root))
	usageErrors(root)
	documentExits(root)
	addExamples(root)
	addCompletions(root)
	return root
}

func (a *app) setup(cmd *cobra.Command) error {
	if err := a.applyEnv(cmd); err != nil {
		return err
	}
	if err := a.applyConfig(cmd); err != nil {
		return err
	}
	if a.timeout <= 0 {
		return cliutil.Usage("--timeout %s: must be positive, like 30s", a.timeout)
	}
	if a.epmdPort <= 0 || a.epmdPort > 65535 {
		return cliutil.Usage("--epmd-port %d: not a port", a.epmdPort)
	}
	lg, err := cliutil.NewLogger(a.err, a.logFormat, a.logLevel, alwaysShown...)
	if err != nil {
		return err
	}
	a.log = lg
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

// alwaysShown are the log messages printed whatever --log-level: long work
// an operator must be able to follow without a terminal (systemd, CI,
// | tee). They are the libraries' own messages (migrate's backfill pauses
// and resume, cluster's heal steps) and cliutil's progress lines; a library
// that renames one silently hides it again, so TestAlwaysShown checks them
// against the sources.
var alwaysShown = []string{
	cliutil.ProgressMessage,
	"backfill throttled",
	"resuming backfill from checkpoint",
	"heal step",
	"monitor stopping",
	"monitor duration reached",
	"monitor stopped", // cmd/migctl's own (consistency.go)
}

// envAnnotation marks a flag with the environment variable it reads.
const envAnnotation = "migctl_env"

// withEnv says that flag name of fs reads env when not given. The variable
// is applied after parsing (applyEnv), not baked into the default: the help
// shows the real default, a bad value is an error naming the variable, and
// config check can say a value came from the environment.
// With several variables the first one set wins (a renamed variable keeps
// its old name as the last).
func withEnv(fs *pflag.FlagSet, name string, env ...string) {
	if err := fs.SetAnnotation(name, envAnnotation, env); err != nil {
		panic(err) // a flag name typo in this file: caught by every test
	}
}

// aliasAnnotation marks a deprecated flag with the flag it stands for.
const aliasAnnotation = "migctl_alias_of"

// deprecatedAlias adds old as a hidden, deprecated spelling of flag name
// (same value; pflag prints "Flag --old has been deprecated, use --name").
// setup treats the alias given as the flag given, so neither the
// environment nor the config file overrides it.
func deprecatedAlias(fs *pflag.FlagSet, old, name string) {
	f := fs.Lookup(name)
	fs.AddFlag(&pflag.Flag{Name: old, Usage: f.Usage, Value: f.Value, DefValue: f.DefValue,
		Annotations: map[string][]string{aliasAnnotation: {name}}})
	if err := fs.MarkDeprecated(old, "use --"+name); err != nil {
		panic(err)
	}
}

// flagEnv is the variable a flag reads, or "".
func flagEnv(f *pflag.Flag) string {
	if v := f.Annotations[envAnnotation]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// applyEnv gives each flag not given on the command line the value of its
// environment variable. A value that does not parse is bad input (exit 2)
// naming the variable: MIGCTL_TIMEOUT=5 (no unit) used to fall back to the
// default in silence.
func (a *app) applyEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if to := f.Annotations[aliasAnnotation]; f.Changed && len(to) > 0 {
			cmd.Flags().Lookup(to[0]).Changed = true
			// cobra buffers pflag's own deprecation notice and drops it.
			fmt.Fprintf(a.err, "migctl: --%s is deprecated: use --%s\n", f.Name, to[0])
		}
	})
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		var env, v string
		for _, e := range f.Annotations[envAnnotation] {
			if v = os.Getenv(e); v != "" {
				env = e
				break
			}
		}
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", env, v, f.Name, unquoteParseErr(err)))
			return
		}
		if a.fromEnv == nil {
			a.fromEnv = map[string]bool{}
		}
		a.fromEnv[f.Name] = true
	})
	if len(errs) > 0 {
		return cliutil.Usage("%w", errors.Join(errs...))
	}
	return nil
}

// unquoteParseErr shortens strconv/time errors ("strconv.ParseInt: parsing
// \"abc\": invalid syntax") to their reason.
func unquoteParseErr(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
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
		return cliutil.Usage("%w", err) // unreadable, or config.ErrInvalid
	}
	a.cfg = c
	vals := c.For(cmd.CommandPath())
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		b, ok := vals[f.Name]
		if !ok || f.Changed || a.fromEnv[f.Name] || (b.Env != "" && os.Getenv(b.Env) != "") {
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
		return cliutil.Usage("%w", errors.Join(errs...))
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
		return nil, cliutil.Usage("%w", err) // erl.ErrNoCookie, or an unreadable cookie file
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
