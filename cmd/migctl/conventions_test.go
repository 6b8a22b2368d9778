package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
)

// These tests start no Erlang node: every case fails, or succeeds, before
// migctl would contact one, or names a node that is not registered with
// the test's EPMD (unreachable).

// testJournal writes a journal holding a finished repair (seq 1) and an
// interrupted heal "h1" (check and backup done), as the packages store
// them.
func testJournal(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(path, journal.Options{})
	require.NoError(t, err)
	_, err = j.Append(consistency.EntryRepair, "drill", consistency.RepairRecord{
		Source: "dets:erlmcp_sessions_dets", Target: "mnesia:erlmcp_session",
		SourceSpec: backends.DefaultSpec(backends.KindDETS), TargetSpec: backends.DefaultSpec(backends.KindMnesia),
		SourceNode: "a@127.0.0.1", TargetNode: "a@127.0.0.1", State: "done", Saved: 2, Written: 2,
		Actions: []consistency.Action{
			{ID: "s1", Kind: consistency.KindMissingInTarget, Op: consistency.CopyToTarget, Why: "target lacks it"},
			{ID: "s2", Kind: consistency.KindMismatched, Op: consistency.CopyToTarget, Why: "source newer"},
		}})
	require.NoError(t, err)
	_, err = j.Append(migrate.KindPhaseChange, "canary", map[string]string{"from": "phase0", "to": "phase1"})
	require.NoError(t, err)
	var heal any
	require.NoError(t, json.Unmarshal([]byte(`{"id":"h1","done":["check","backup"],
		"plan":{"islands":[{"nodes":["a@127.0.0.1"]},{"nodes":["b@127.0.0.1"]}],"winner":0}}`), &heal))
	require.NoError(t, j.PutState("cluster.heal", "h1", heal))
	return path
}

// journalEntries reads a journal's entries (to show that a command wrote
// none).
func journalEntries(t *testing.T, path string) []journal.Entry {
	t.Helper()
	j, err := journal.Open(path, journal.Options{ReadOnly: true})
	require.NoError(t, err)
	es, err := j.List("", 0)
	require.NoError(t, err)
	return es
}

// TestExitCodes runs the binary with bad input, and with nodes that cannot
// be reached, and checks the exit code and what stderr says. Nothing here
// needs (or starts) an Erlang node.
func TestExitCodes(t *testing.T) {
	jpath := testJournal(t)
	missing := filepath.Join(t.TempDir(), "typo", "journal.db")
	// An unreachable node: a name the test's EPMD does not know.
	down := []string{"MIGCTL_NODES=nobody@127.0.0.1", "MIGCTL_COOKIE=not-used", "MIGCTL_JOURNAL=" + jpath}
	cases := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr []string
	}{
		// Unknown commands and subcommands: exit 2, with a suggestion.
		{"mistyped subcommand", nil, []string{"phase", "sett", "phase1"}, 2, []string{`unknown command "sett" for "migctl phase"`, `did you mean "migctl phase set"`}},
		{"mistyped tables create", nil, []string{"tables", "crate"}, 2, []string{"unknown command", `did you mean "migctl tables create"`}},
		{"mistyped config check", nil, []string{"config", "chek"}, 2, []string{"unknown command", `did you mean "migctl config check"`}},
		{"mistyped command", nil, []string{"phasee", "show"}, 2, []string{`unknown command "phasee" for "migctl"`, `did you mean "migctl phase"`}},
		{"unknown command", nil, []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"mistyped subcommand of a runnable command", nil, []string{"backfill", "statsu"}, 2, []string{`did you mean "migctl backfill status"`}},
		{"mistyped completion shell", nil, []string{"completion", "bsh"}, 2, []string{"unknown command"}},
		{"help on a mistyped command", nil, []string{"help", "sett"}, 2, []string{`unknown command "sett" for "migctl"`}},
		{"help on a mistyped subcommand", nil, []string{"help", "phase", "sett"}, 2, []string{`did you mean "migctl phase set"`}},
		// Environment variables that do not parse: exit 2, naming them.
		{"MIGCTL_TIMEOUT without a unit", []string{"MIGCTL_TIMEOUT=5"}, []string{"config", "check"}, 2, []string{"MIGCTL_TIMEOUT", "missing unit"}},
		{"ERL_EPMD_PORT not a number", []string{"ERL_EPMD_PORT=abc"}, []string{"config", "check"}, 2, []string{"ERL_EPMD_PORT", "invalid syntax"}},
		{"MIGCTL_OUTPUT unknown", []string{"MIGCTL_OUTPUT=yaml"}, []string{"version"}, 2, []string{"table or json"}},
		{"bad --log-format", nil, []string{"--log-format", "xml", "version"}, 2, []string{"--log-format"}},
		// Renamed flags: an alias says so and still works; the old
		// destructive spelling is refused.
		{"tables create --table", nil, []string{"tables", "create", "--table", "t", "--dry-run"}, 2, []string{"--table is deprecated: use --mnesia-table", "no nodes"}},
		{"schema create --force", []string{"MIGCTL_NODES=a@127.0.0.1"}, []string{"schema", "create", "--force", "--yes"}, 2, []string{"--delete-existing-schema", "nothing changed"}},
		// Arguments.
		{"phase set without a phase", nil, []string{"phase", "set"}, 2, []string{"accepts 1 arg(s), received 0"}},
		{"sessions get without an id", nil, []string{"sessions", "get"}, 2, []string{"accepts 1 arg(s)", "sessions get ID"}},
		{"an argument to a command that takes none", nil, []string{"ping", "extra"}, 2, []string{"ping takes no arguments"}},
		{"unknown phase", nil, []string{"phase", "set", "phase7"}, 2, []string{"unknown phase"}},
		{"phase2 without --percent", nil, []string{"phase", "set", "phase2"}, 2, []string{"needs --percent"}},
		{"undo-repair RUN not a number", nil, []string{"consistency", "undo-repair", "abc"}, 2, []string{"sequence number"}},
		// Flags.
		{"--percent not a number", nil, []string{"phase", "set", "phase2", "--percent", "abc"}, 2, []string{`invalid argument "abc" for "--percent"`}},
		{"--timeout without a unit", nil, []string{"--timeout", "5", "ping"}, 2, []string{`"--timeout"`, "missing unit"}},
		{"--duration in weeks", nil, []string{"consistency", "monitor", "--duration", "2w"}, 2, []string{`"--duration"`, "14d"}},
		{"negative --history-retention", nil, []string{"consistency", "monitor", "--history-retention", "-1d"}, 2, []string{`"--history-retention"`, "14d"}},
		{"unknown flag", nil, []string{"ping", "--bogus"}, 2, []string{"unknown flag: --bogus"}},
		{"unknown shorthand flag", nil, []string{"version", "-z"}, 2, []string{"unknown shorthand flag"}},
		{"bad --log-level", nil, []string{"--log-level", "loud", "version"}, 2, []string{"--log-level"}},
		{"bad -o", nil, []string{"-o", "yaml", "version"}, 2, []string{"table or json"}},
		{"bad --stop-after", nil, []string{"cluster", "heal", "--execute", "--stop-after", "lunch"}, 2, []string{"not a step"}},
		{"bad node name", []string{"MIGCTL_NODES=not-a-node"}, []string{"ping"}, 2, []string{"--nodes"}},
		{"no nodes", nil, []string{"ping"}, 2, []string{"no nodes"}},
		{"import of a missing file", nil, []string{"sessions", "import", "--store", "mnesia", "--in", filepath.Join(t.TempDir(), "none.mexp")}, 2, []string{"none.mexp"}},
		// The journal.
		{"journal --kind phase", []string{"MIGCTL_JOURNAL=" + jpath}, []string{"journal", "--kind", "phase"}, 0, nil},
		{"unknown journal kind", []string{"MIGCTL_JOURNAL=" + jpath}, []string{"journal", "--kind", "phases"}, 2, []string{`--kind "phases"`, "phase, backfill", "heal"}},
		{"journal at a missing path", nil, []string{"journal", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"history at a missing path", nil, []string{"consistency", "history", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"backfill status at a missing path", nil, []string{"backfill", "status", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"restore-backup --list at a missing path", nil, []string{"cluster", "restore-backup", "--list", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"undo-repair at a missing path", nil, []string{"consistency", "undo-repair", "1", "--dry-run", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"heal --resume at a missing path", nil, []string{"cluster", "heal", "--resume", "h1", "--dry-run", "--journal", missing}, 2, []string{"no journal at " + missing}},
		{"backfill status needs no node", []string{"MIGCTL_JOURNAL=" + jpath}, []string{"backfill", "status"}, 0, nil},
		{"heal --resume of an unknown heal", []string{"MIGCTL_JOURNAL=" + jpath}, []string{"cluster", "heal", "--resume", "h9", "--dry-run"}, 2, []string{`"h9"`}},
		{"undo-repair of a phase change", []string{"MIGCTL_JOURNAL=" + jpath}, []string{"consistency", "undo-repair", "2", "--dry-run"}, 2, []string{"not a repair"}},
		// One unreachable node: 3 from every command that needs the
		// nodes; cluster status's verdict is 6.
		{"ping, a node unreachable", down, []string{"ping"}, 3, nil},
		{"consistency check, a node unreachable", down, []string{"consistency", "check", "--source", "dets", "--target", "mnesia"}, 3, nil},
		{"phase show, a node unreachable", down, []string{"phase", "show"}, 3, nil},
		{"phase set, a node unreachable", down, []string{"phase", "set", "phase1", "--yes"}, 3, nil},
		{"backfill, a node unreachable", down, []string{"backfill", "--yes"}, 3, nil},
		{"verify-replication, a node unreachable", down, []string{"cluster", "verify-replication"}, 3, nil},
		{"cluster status, a node unreachable", down, []string{"cluster", "status"}, 6, nil},
		// Refusals that need no node.
		{"heal --resume without --yes or a terminal", down, []string{"cluster", "heal", "--resume", "h1"}, 5, []string{"--yes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, c.env, c.args...)
			require.Equal(t, c.code, r.code, "migctl %s\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), r.stdout, r.stderr)
			for _, s := range c.stderr {
				require.Contains(t, r.stderr, s)
			}
		})
	}
	_, err := os.Stat(filepath.Dir(missing))
	require.True(t, os.IsNotExist(err), "a read-only command created %s", filepath.Dir(missing))
	require.Len(t, journalEntries(t, jpath), 2, "nothing was journaled")
}

// TestDryRunsChangeNothing: the dry runs that read only the journal print
// their plan as JSON and write nothing, with --yes too.
func TestDryRunsChangeNothing(t *testing.T) {
	jpath := testJournal(t)
	env := []string{"MIGCTL_NODES=a@127.0.0.1,b@127.0.0.1", "MIGCTL_COOKIE=not-used", "MIGCTL_JOURNAL=" + jpath}
	before := journalEntries(t, jpath)

	r := run(t, env, "cluster", "heal", "--resume", "h1", "--dry-run", "--yes", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep cluster.HealReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.True(t, rep.DryRun)
	var steps []string
	for _, s := range rep.Steps {
		steps = append(steps, s.Step)
	}
	require.NotContains(t, steps, "backup", "done before")
	require.Contains(t, steps, "merge")

	r = run(t, env, "consistency", "undo-repair", "1", "--dry-run", "--yes", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var p UndoPlan
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &p))
	require.Equal(t, UndoPlan{Run: 1, DryRun: true, Source: "dets:erlmcp_sessions_dets", Target: "mnesia:erlmcp_session",
		SourceNode: "a@127.0.0.1", TargetNode: "a@127.0.0.1", State: "done", Saved: 2, Actions: p.Actions}, p)
	require.Len(t, p.Actions, 2)

	require.Equal(t, before, journalEntries(t, jpath), "a dry run journaled something")
}

// changing are the commands that change a store or a cluster: each takes
// --dry-run (the plan, nothing changed), --yes (no prompt; without a
// terminal it refuses) and --reason (journaled).
var changing = map[string]bool{
	"sessions import": true, "phase set": true, "phase rollback": true, "backfill": true,
	"schema create": true, "tables create": true, "archive dets": true, "verify persistence": true,
	"consistency repair": true, "consistency undo-repair": true,
	"cluster add-node": true, "cluster remove-node": true, "cluster resync": true, "cluster heal": true,
	"cluster restore-backup": true,
}

// reporting are the commands whose output is a result a script reads:
// each takes -o json.
var reporting = map[string]bool{
	"version": true, "ping": true, "probe": true, "sessions count": true, "sessions get": true, "sessions list": true,
	"sessions export": true, "journal": true, "config check": true, "phase show": true, "backfill status": true,
	"consistency check": true, "consistency history": true, "cluster status": true, "cluster verify-replication": true,
	// Long-running: one JSON object a line with -o json.
	"consistency monitor": true, "cluster watch": true,
}

// watchable are the reports an operator keeps on screen: each takes
// --watch [interval] (redrawn on a terminal, one report per interval
// otherwise, exit 0 on Ctrl-C).
var watchable = map[string]bool{"phase show": true, "backfill status": true, "cluster status": true}

// exempt are commands that neither change a store or cluster nor report a
// result, with the reason -o json, --dry-run, --yes and --reason do not
// apply to them.
var exempt = map[string]string{
	"config example":        "prints the documented YAML example itself",
	"completion bash":       "prints a shell script",
	"completion zsh":        "prints a shell script",
	"completion fish":       "prints a shell script",
	"completion powershell": "prints a shell script",
	"docs man":              "hidden; writes man pages into --dir for packaging",
	"docs markdown":         "hidden; writes Markdown pages into --dir for packaging",
}

// safeDefaults: a --mode flag decides what a write does to a session the
// store already holds; its default must be the safe if_newer.
var safeDefaults = map[string]string{"mode": string(backends.IfNewer)}

// TestCommandConventions walks the whole command tree: every command is
// classified (changing, reporting, or exempt with a reason), changing ones
// take --dry-run, --yes and --reason, reporting ones -o json, every
// command's help lists its exit codes, and the binary refuses an unknown
// flag, an unknown subcommand and surplus arguments on every command with
// exit 2 before it does anything.
func TestCommandConventions(t *testing.T) {
	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	type cmdInfo struct {
		path  string
		group bool
		c     *cobra.Command
	}
	var all []cmdInfo
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasParent() {
			path := strings.TrimPrefix(c.CommandPath(), "migctl ")
			all = append(all, cmdInfo{path: path, c: c,
				group: c.HasSubCommands() && !changing[path] && !reporting[path]})
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	sort.Slice(all, func(i, j int) bool { return all[i].path < all[j].path })
	seen := map[string]bool{}
	for _, ci := range all {
		seen[ci.path] = true
		c, path := ci.c, ci.path
		n := 0
		for _, in := range []bool{changing[path], reporting[path], exempt[path] != "", ci.group} {
			if in {
				n++
			}
		}
		require.Equal(t, 1, n, "migctl %s: classify it in exactly one of changing, reporting, exempt (or give it subcommands)", path)
		if changing[path] {
			for _, f := range []string{"dry-run", "yes", "reason"} {
				require.NotNil(t, c.Flags().Lookup(f), "migctl %s changes a store or cluster: it needs --%s", path, f)
			}
		}
		if changing[path] {
			require.Contains(t, c.Example, "migctl "+path, "migctl %s changes something: its help needs an Examples: section (examples.go)", path)
			require.Contains(t, c.Example, "--dry-run", "migctl %s: its examples show the dry run first", path)
		}
		if watchable[path] {
			f := c.Flags().Lookup("watch")
			require.NotNil(t, f, "migctl %s promises --watch", path)
			require.Equal(t, defaultWatch.String(), f.NoOptDefVal, "migctl %s: --watch alone has an interval", path)
		}
		if reporting[path] {
			f := c.Flag("output")
			require.NotNil(t, f, "migctl %s reports: it needs -o json", path)
			require.Equal(t, "o", f.Shorthand)
		}
		for name, def := range safeDefaults {
			if f := c.Flags().Lookup(name); f != nil {
				require.Equal(t, def, f.DefValue, "migctl %s --%s defaults to the safe value", path, name)
			}
		}
		require.Contains(t, c.Long, "Exit codes: ", "migctl %s: its help lists its exit codes (exitHelp)", path)
	}
	for _, m := range []map[string]bool{changing, reporting} {
		for p := range m {
			require.True(t, seen[p], "migctl %s is listed here but is not a command", p)
		}
	}
	for p := range exempt {
		require.True(t, seen[p], "migctl %s is exempt here but is not a command", p)
	}
	for p := range exitHelp {
		require.True(t, seen[p], "exitHelp documents migctl %s, which is not a command", p)
	}

	// The binary, on every command: an unknown flag, surplus arguments (or
	// an unknown subcommand) are exit 2, before any node or journal is
	// touched (no MIGCTL_NODES here; a journal path that does not exist).
	missing := filepath.Join(t.TempDir(), "none", "journal.db")
	env := []string{"MIGCTL_JOURNAL=" + missing}
	r := run(t, env, "--no-such-flag")
	require.Equal(t, cliutil.ExitUsage, r.code, r.stderr)
	for _, ci := range all {
		args := strings.Fields(ci.path)
		r := run(t, env, append(args, "--no-such-flag")...)
		require.Equal(t, cliutil.ExitUsage, r.code, "migctl %s --no-such-flag: %s", ci.path, r.stderr)
		require.Contains(t, r.stderr, "unknown flag")
		r = run(t, env, append(args, "zzz", "zzz", "zzz", "zzz", "zzz")...)
		require.Equal(t, cliutil.ExitUsage, r.code, "migctl %s zzz ...: %s", ci.path, r.stderr)
		if ci.c.HasSubCommands() {
			require.Contains(t, r.stderr, `unknown command "zzz"`, ci.path)
		}
	}
	_, err := os.Stat(filepath.Dir(missing))
	require.True(t, os.IsNotExist(err), "no journal directory created")

	// A command that only groups others prints its help (exit 0).
	r = run(t, env, "phase")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Available Commands")
}

// TestReportsAsJSON runs the reporting commands that need no node with -o
// json and decodes what they print.
func TestReportsAsJSON(t *testing.T) {
	jpath := testJournal(t)
	env := []string{"MIGCTL_JOURNAL=" + jpath}
	for _, args := range [][]string{
		{"version"}, {"journal"}, {"journal", "--kind", "repair"}, {"config", "check"}, {"backfill", "status"},
		{"consistency", "history"}, {"cluster", "restore-backup", "--list"},
	} {
		r := run(t, env, append(args, "-o", "json")...)
		require.Equal(t, 0, r.code, "migctl %s: %s", strings.Join(args, " "), r.stderr)
		require.True(t, json.Valid([]byte(r.stdout)), "migctl %s -o json printed %q", strings.Join(args, " "), r.stdout)
	}
	r := run(t, env, "journal", "--kind", "repair", "-o", "json")
	var es []journal.Entry
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &es))
	require.Len(t, es, 1)
	require.Equal(t, consistency.EntryRepair, es[0].Kind)
	r = run(t, env, "journal", "--kind", "heal", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &es))
	require.Empty(t, es)
}

// TestConfigCheckSources: config check says where each value comes from
// (flag, env, config, default) for the global flags and for the flags of
// other commands that the environment or the file set.
func TestConfigCheckSources(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "migctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("nodes: [a@b]\ntimeout: 7s\nmonitor:\n  interval: 1m\n"), 0o600))
	env := []string{"MIGCTL_CONFIG=" + cfg, "MIGCTL_NODES=x@h,y@h", "MIGCTL_DETS_FILE=/d.dets"}
	r := run(t, env, "config", "check", "--log-level", "info", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var got []EffectiveSetting
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	by := map[string]EffectiveSetting{}
	for _, s := range got {
		by[s.Flag] = s
	}
	require.Equal(t, EffectiveSetting{Flag: "nodes", Env: "MIGCTL_NODES", Value: "x@h,y@h", Source: "env"}, by["nodes"])
	require.Equal(t, EffectiveSetting{Flag: "timeout", Env: "MIGCTL_TIMEOUT", Value: "7s", Source: "config"}, by["timeout"])
	require.Equal(t, "flag", by["log-level"].Source)
	require.Equal(t, "default", by["log-format"].Source)
	require.Equal(t, "env", by["config"].Source)
	require.Equal(t, "env", by["dets-file"].Source)
	require.Equal(t, "/d.dets", by["dets-file"].Value)
	require.Contains(t, by["dets-file"].Commands, "consistency check")
	require.Equal(t, []string{"consistency monitor"}, by["interval"].Commands)
	require.Equal(t, "config", by["interval"].Source)
}

// TestStoreNameAnyCase: --store Mnesia is --store mnesia, and --table
// applies to it (it used to be ignored for a capitalised store name).
func TestStoreNameAnyCase(t *testing.T) {
	var s storeFlags
	s.store, s.table, s.mnesTab, s.detsTab = "Mnesia", "other_table", backends.DefaultMnesiaTable, backends.DefaultDETSTable
	require.Equal(t, "other_table", s.specOf(backends.KindMnesia).Table)
	require.Equal(t, backends.DefaultDETSTable, s.specOf(backends.KindDETS).Table)
}

// TestAlwaysShown: the messages the logger shows whatever the level are
// still the libraries' messages (a renamed one would be hidden again).
func TestAlwaysShown(t *testing.T) {
	var src strings.Builder
	for _, dir := range []string{"../../migrate", "../../cluster", "../../consistency", "../../internal/cliutil"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			src.Write(b)
		}
	}
	for _, m := range alwaysShown {
		if m == cliutil.ProgressMessage || m == "monitor stopped" {
			continue
		}
		require.Contains(t, src.String(), `"`+m+`"`, "no library logs %q any more", m)
	}
}

// TestWatchUntilInterrupt: --watch without a terminal prints one report
// per interval (-o json: one object a line), keeps going when a round's
// verdict is bad (a node unreachable: cluster status says degraded) and
// ends with exit 0 on Ctrl-C.
func TestWatchUntilInterrupt(t *testing.T) {
	jpath := testJournal(t)
	for _, c := range []struct {
		env  []string
		args []string
		key  string
	}{
		{[]string{"MIGCTL_JOURNAL=" + jpath}, []string{"backfill", "status", "--watch=100ms", "-o", "json"}, "progress"},
		{[]string{"MIGCTL_NODES=nobody@127.0.0.1", "MIGCTL_COOKIE=not-used"}, []string{"cluster", "status", "--watch=100ms", "-o", "json"}, "verdict"},
	} {
		t.Run(strings.Join(c.args[:2], " "), func(t *testing.T) {
			cmd := migctl(t, c.env, c.args...)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var se strings.Builder
			cmd.Stderr = &se
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				select { // already collected when the test got that far
				case <-done:
				case <-time.After(5 * time.Second):
				}
			})
			dec := json.NewDecoder(stdout)
			for i := 0; i < 3; i++ {
				var v map[string]any
				require.NoError(t, dec.Decode(&v), "report %d; stderr: %s", i, se.String())
				require.Contains(t, v, c.key)
			}
			require.NoError(t, cmd.Process.Signal(os.Interrupt))
			_, _ = io.Copy(io.Discard, stdout)
			require.NoError(t, <-done, "stopped by Ctrl-C: exit 0; stderr: %s", se.String())
		})
	}
}

// TestExamplesParse: every migctl line of every Examples: section is a
// command migctl accepts (the docs' check: the binary parses it with
// --help, and the tree resolves its words and arguments).
func TestExamplesParse(t *testing.T) {
	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	var doc strings.Builder
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example != "" {
			doc.WriteString("```sh\n" + c.Example + "\n```\n")
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	cmds, err := extractCommands("examples", strings.NewReader(doc.String()))
	require.NoError(t, err)
	require.Greater(t, len(cmds), 30)
	for _, c := range cmds {
		if err := checkCommand(t, c); err != nil {
			t.Errorf("example: migctl %s\n  %v", strings.Join(c.args, " "), err)
		}
	}
}

// TestCompletion: the shell completes phases, stores, -o, modes, heal
// steps, and the nodes from MIGCTL_NODES or the configuration file.
func TestCompletion(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "migctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("nodes: [c1@h, c2@h]\n"), 0o600))
	for _, c := range []struct {
		env  []string
		args []string
		want []string
	}{
		{nil, []string{"phase", "set", ""}, []string{"phase0\t", "phase3\t"}},
		{nil, []string{"-o", ""}, []string{"table", "json"}},
		{nil, []string{"consistency", "check", "--source", ""}, []string{"ets", "dets", "mnesia"}},
		{nil, []string{"sessions", "import", "--mode", ""}, []string{"if_newer", "if_absent", "overwrite"}},
		{nil, []string{"cluster", "heal", "--stop-after", ""}, []string{"backup", "merge", "verify"}},
		{[]string{"MIGCTL_NODES=a@h,b@h"}, []string{"cluster", "resync", ""}, []string{"a@h", "b@h"}},
		{[]string{"MIGCTL_CONFIG=" + cfg}, []string{"cluster", "heal", "--winner", ""}, []string{"c1@h", "c2@h"}},
		{nil, []string{"--config", cfg, "sessions", "count", "--node", ""}, []string{"c1@h", "c2@h"}},
	} {
		r := run(t, c.env, append([]string{"__complete"}, c.args...)...)
		require.Equal(t, 0, r.code, r.stderr)
		for _, w := range c.want {
			require.Contains(t, r.stdout, w, "migctl %s<TAB>", strings.Join(c.args, " "))
		}
	}
}
