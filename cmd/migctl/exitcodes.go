package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/exportfile"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/config"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
)

// exitTable is the one table from the libraries' sentinel errors to
// migctl's exit codes (README, "Exit codes"), each with the hint main
// prints under the error. Commands return errors as the libraries made
// them; main looks the code up here. Flag checks return cliutil.Usage
// (2), and a command's verdict that is not an error (cluster status
// partitioned → 7, a check that found differences → 4) is an inline
// cliutil.WithCode with a comment; either wins over the table. An error
// that matches no row is 1 (failed).
//
// The rule for nodes: a command that needs a node it cannot reach (the
// name does not resolve, no epmd, the node is not registered, the cookie is
// rejected, the node went down or does not answer in time) exits 3, also
// when only one of several nodes is unreachable. 6 (degraded) and 7
// (partitioned) are verdicts on the Mnesia cluster: 6 only from `cluster
// status`, 7 from `cluster status` and from changes refused because the
// cluster is split.
//
// Rows are tried in order, so that an error wrapping two sentinels (a
// phase change that met a node that went down: migrate.ErrNodeDown and
// erl.ErrNodeDown) gets the first row's code: bad input first, then
// unreachable, partitioned, refused, differences.
//
// A hint says what to look at next, not what the error already says; ""
// when the error says it all. erl's errors carry their own hint (the
// message has "(hint: ...)"), and then the table's is not printed.
var exitTable = []struct {
	err  error
	code int
	hint string
}{
	// 2: bad input, nothing changed.
	{erl.ErrBadNodeName, cliutil.ExitUsage, "node names look like erlmcp1@host (--nodes, MIGCTL_NODES)"},
	{erl.ErrNoCookie, cliutil.ExitUsage, "give the nodes' cookie with --cookie-file, MIGCTL_COOKIE_FILE or MIGCTL_COOKIE, or in ~/.erlang.cookie"},
	{config.ErrInvalid, cliutil.ExitUsage, "docs/config.md has every field; migctl config example prints a valid file"},
	{journal.ErrOtherCluster, cliutil.ExitUsage, "each cluster has its own journal: pass this cluster's with --journal (MIGCTL_JOURNAL)"},
	{journal.ErrNoJournal, cliutil.ExitUsage, "check --journal (MIGCTL_JOURNAL); commands that change something create it"},
	{migrate.ErrUnknownPhase, cliutil.ExitUsage, "the phases are phase0, phase1, phase2 and phase3"},
	{migrate.ErrBadPercent, cliutil.ExitUsage, "phase2 takes --percent 0..100"},
	{migrate.ErrNotSessions, cliutil.ExitUsage, "the table does not have erlmcp's session layout: check --ets-table, --dets-table, --mnesia-table"},
	{backends.ErrUnknownStore, cliutil.ExitUsage, "the stores are ets, dets and mnesia"},
	{backends.ErrNotSessions, cliutil.ExitUsage, "the table does not have erlmcp's session layout: check --ets-table, --dets-table, --mnesia-table"},
	{backends.ErrOtherFile, cliutil.ExitUsage, "the node has that DETS table open from another file: check --dets-file"},
	{exportfile.ErrCorrupt, cliutil.ExitUsage, "nothing was imported; export the sessions again (migctl sessions export)"},
	{cluster.ErrUnknownNode, cliutil.ExitUsage, "migctl cluster status lists the cluster's nodes"},
	{cluster.ErrBadPlan, cliutil.ExitUsage, "write the plan with migctl cluster heal --plan -o json"},
	{cluster.ErrUnknownStep, cliutil.ExitUsage, ""},
	{consistency.ErrNotRepair, cliutil.ExitUsage, "migctl consistency history lists the repairs and their numbers"},
	// 3: a node unreachable.
	{erl.ErrHostNotFound, cliutil.ExitUnreachable, ""},
	{erl.ErrEPMDUnreachable, cliutil.ExitUnreachable, ""},
	{erl.ErrNotRegistered, cliutil.ExitUnreachable, ""},
	{erl.ErrBadCookie, cliutil.ExitUnreachable, ""},
	{erl.ErrUnreachable, cliutil.ExitUnreachable, ""},
	{erl.ErrNodeDown, cliutil.ExitUnreachable, "the node went down during the command: check it, then run the command again"},
	{erl.ErrTimeout, cliutil.ExitUnreachable, "the node did not answer within --timeout (MIGCTL_TIMEOUT); a busy node may need a longer one"},
	{migrate.ErrNodeDown, cliutil.ExitUnreachable, "every node of --nodes must answer: migctl ping shows which does not"},
	// The node answers but its DETS table cannot yet (opening, repairing
	// after a crash): as unreachable for the store, and a script retries.
	{backends.ErrDETSOpening, cliutil.ExitUnreachable, ""}, // the error's hint says when to retry
	// 7: the Mnesia cluster is split.
	{migrate.ErrPartitioned, cliutil.ExitPartitioned, "heal the split first: migctl cluster heal --plan"},
	// 5: refused.
	{cliutil.ErrNotConfirmed, cliutil.ExitRefused, ""}, // the message says --yes / --dry-run
	{migrate.ErrSkipPhase, cliutil.ExitRefused, "phases go one step at a time: migctl phase show has the current one"},
	{migrate.ErrGate, cliutil.ExitRefused, ""}, // the message names the gate
	{migrate.ErrMixed, cliutil.ExitRefused, "migctl phase show lists each node's phase"},
	{migrate.ErrNotInstalled, cliutil.ExitRefused, "migctl phase show names the nodes whose application does not run the hybrid backend"},
	{migrate.ErrWrongPhase, cliutil.ExitRefused, "migctl phase show has the current phase"},
	{migrate.ErrConflict, cliutil.ExitRefused, "someone changed the phase meanwhile: read it again with migctl phase show"},
	{migrate.ErrExists, cliutil.ExitRefused, ""},
	{cluster.ErrNotPartitioned, cliutil.ExitRefused, "migctl cluster status shows the verdict: there is no split to heal"},
	{cluster.ErrNotHealthy, cliutil.ExitRefused, "migctl cluster status shows what is wrong; a split cluster needs migctl cluster heal"},
	{cluster.ErrPlanStale, cliutil.ExitRefused, "make a new plan with migctl cluster heal --plan"},
	{cluster.ErrLoserStopped, cliutil.ExitRefused, ""}, // the message says the way on
	{consistency.ErrAlreadyUndone, cliutil.ExitRefused, ""},
	// 4: a check found a problem.
	{migrate.ErrVerify, cliutil.ExitDifferences, ""},
}

// exitStatus is the process's exit status for err, and the hint to print
// under it ("" for none).
func exitStatus(err error) (int, string) {
	if err == nil {
		return cliutil.ExitOK, ""
	}
	code := -1
	var ce *cliutil.CodeError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	for _, row := range exitTable {
		if !errors.Is(err, row.err) {
			continue
		}
		if code < 0 {
			code = row.code
		}
		hint := row.hint
		if strings.Contains(err.Error(), "(hint: ") {
			hint = "" // erl.Error brought its own
		}
		return code, hint
	}
	if code < 0 {
		code = cliutil.ExitFailure
	}
	return code, ""
}

// exitCode is the process's exit status for err.
func exitCode(err error) int {
	code, _ := exitStatus(err)
	return code
}

// usageErrors makes every mistake on the command line exit 2 (bad input,
// nothing changed), whatever part of cobra finds it: an unknown command or
// subcommand (with "did you mean"), an unknown flag or a flag value that
// does not parse, a wrong number of arguments. A command that only groups
// others prints its help when called alone (exit 0) and refuses anything
// else after it as an unknown command.
func usageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return cliutil.Usage("%v (see '%s --help')", err, c.CommandPath())
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if c.HasSubCommands() && !c.Runnable() {
			c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
		}
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if cmd.HasSubCommands() && len(args) > 0 && (check == nil || check(cmd, args) != nil) {
				return unknownCommand(cmd, args[0])
			}
			if check == nil {
				return nil
			}
			if err := check(cmd, args); err != nil {
				name := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
				if strings.HasPrefix(err.Error(), "unknown command") { // cobra.NoArgs
					return cliutil.Usage("%s takes no arguments, got %q (usage: %s)", name, strings.Join(args, " "), cmd.UseLine())
				}
				return cliutil.Usage("%s: %v (usage: %s)", name, err, cmd.UseLine())
			}
			return nil
		}
	}
	walk(root)
}

// helpCommand replaces cobra's `help [command]`, which prints "Unknown help
// topic" and exits 0 for a typo (`migctl help sett`): a script or an
// operator reading $? would take the typo for an answer. Here a topic that
// names no command is the same exit 2, with "did you mean", as running it.
func helpCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long: `Help about any command: migctl help phase set is migctl phase set --help.

Exit codes: 0 help printed; 2 no such command.`,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			cmd, _, err := root.Find(args)
			if err != nil || cmd == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, s.Name()+"\t"+s.Short)
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := root.Find(args)
			if err != nil || cmd == nil {
				return unknownCommand(root, args[0])
			}
			if len(rest) > 0 {
				return unknownCommand(cmd, rest[0])
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}

// unknownCommand is the error for a word that names no subcommand of cmd.
func unknownCommand(cmd *cobra.Command, word string) error {
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		for i := range s {
			s[i] = fmt.Sprintf("%q", cmd.CommandPath()+" "+s[i])
		}
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	var names []string
	for _, s := range cmd.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	if len(names) > 0 {
		msg += " (commands: " + strings.Join(names, ", ") + ")"
	}
	return cliutil.Usage("%s", msg)
}

// exitHelp is what each command's help says about its exit codes (its
// "Exit codes:" paragraph); TestCommandConventions checks that every
// command that runs has one. The words follow exitTable and the rule for
// unreachable nodes above.
var exitHelp = map[string]string{
	"version":                    "0 ok; 2 bad input",
	"ping":                       "0 every node answers; 2 bad input (no nodes, no cookie, a bad node name); 3 a node unreachable (name, epmd, cookie, down)",
	"probe":                      "0 every node looked at; 2 bad input (a --duration or --interval out of range, no nodes, no cookie); 3 a node unreachable (the others are still reported)",
	"sessions":                   "0 help printed; 2 unknown command or flag",
	"sessions count":             "0 ok; 1 failed (no such table, ...); 2 bad input; 3 the node unreachable",
	"sessions get":               "0 ok; 1 failed (no such session or table); 2 bad input; 3 the node unreachable",
	"sessions list":              "0 ok; 1 failed; 2 bad input; 3 the node unreachable",
	"sessions export":            "0 ok; 1 failed; 2 bad input (not a session table, ...); 3 the node unreachable",
	"sessions import":            "0 ok (or the plan printed); 1 failed (part of the file may be written: run it again, if_newer makes that safe); 2 bad input (a missing or damaged file: nothing written); 3 the node unreachable; 5 refused (no --yes without a terminal)",
	"journal":                    "0 ok; 1 failed (unreadable journal); 2 bad input (unknown --kind, no journal at the path)",
	"config":                     "0 help printed; 2 unknown command or flag",
	"config example":             "0 ok",
	"config check":               "0 the configuration is valid; 2 it is not (the field is named)",
	"cluster":                    "0 help printed; 2 unknown command or flag",
	"cluster status":             "0 healthy; 1 failed; 2 bad input; 6 degraded (a node unreachable, or its Mnesia not running); 7 partitioned",
	"cluster verify-replication": "0 every copy agrees; 1 failed; 2 bad input; 3 a node unreachable (its copy was not compared); 4 copies differ",
	"cluster add-node":           "0 done (or the plan printed); 1 failed; 2 bad input; 3 a node unreachable; 5 refused (no --yes without a terminal)",
	"cluster remove-node":        "0 done (or the plan printed); 1 failed; 2 bad input (not a node of the cluster); 3 a node unreachable; 5 refused (no --yes without a terminal)",
	"cluster resync":             "0 done (or the plan printed); 1 failed; 2 bad input (not a node of the cluster); 3 a node unreachable; 5 refused (no --yes without a terminal, or the cluster is not healthy)",
	"cluster watch":              "0 stopped (interrupt, SIGTERM); 1 failed; 2 bad input; 3 a node unreachable at the start",
	"cluster heal":               "0 healed (or the plan printed); 1 failed, or stopped by --stop-after (resume it); 2 bad input (a bad plan file, an unknown node or step, a --resume ID the journal does not hold); 3 a node unreachable; 5 refused (no --yes without a terminal, the cluster is not partitioned, the plan no longer matches, the heal to resume completed)",
	"cluster restore-backup":     "0 restored (or the plan, or the list, printed); 1 failed; 2 bad input (--list: no journal at the path); 3 the node unreachable; 5 refused (no --yes without a terminal)",
	"phase":                      "0 help printed; 2 unknown command or flag",
	"phase show":                 "0 every node answers, runs the hybrid and agrees; 1 failed; 2 bad input; 3 a node unreachable; 5 the hybrid is not installed on a node, or the nodes disagree (mixed)",
	"phase set":                  "0 changed, unchanged, or the plan printed; 1 failed (nothing or everything changed: see the journal); 2 bad input (unknown phase, --percent); 3 a node unreachable; 5 refused (a gate, a skipped phase, a mixed cluster, no --yes without a terminal); 7 the Mnesia cluster is partitioned",
	"phase rollback":             "0 rolled back (or the plan printed); 1 failed; 2 bad input; 3 a node unreachable; 5 refused (at phase0, a mixed cluster, no --yes without a terminal); 7 the Mnesia cluster is partitioned",
	"backfill":                   "0 complete (or the plan printed); 1 failed or interrupted (run it again to resume); 2 bad input (--from/--to); 3 a node unreachable; 5 refused (wrong phase, no --yes without a terminal)",
	"backfill status":            "0 ok (no node is contacted); 1 failed (unreadable journal); 2 bad input (no journal at the path)",
	"schema":                     "0 help printed; 2 unknown command or flag",
	"schema create":              "0 created (or the plan printed); 1 failed; 2 bad input; 3 a node unreachable, or its Mnesia not running; 5 refused (a schema exists, no --yes without a terminal)",
	"tables":                     "0 help printed; 2 unknown command or flag",
	"tables create":              "0 created or already there (or the plan printed); 1 failed; 2 bad input (an existing table without erlmcp's layout); 3 a node unreachable, or its Mnesia not running; 5 refused (no --yes without a terminal)",
	"archive":                    "0 help printed; 2 unknown command or flag",
	"archive dets":               "0 written and verified (or the plan printed); 1 failed; 2 bad input; 3 a node unreachable; 4 the archive did not verify; 5 refused (the archive exists, no --yes without a terminal)",
	"verify":                     "0 help printed; 2 unknown command or flag",
	"verify persistence":         "0 the sessions survived the restart (or the plan printed); 1 failed; 2 bad input; 3 a node unreachable, or it did not come back; 4 counts or checksums differ after the restart; 5 refused (no --yes without a terminal)",
	"consistency":                "0 help printed; 2 unknown command or flag",
	"consistency check":          "0 the stores agree; 1 failed (the check could not be completed); 2 bad input; 3 a node unreachable; 4 differences found",
	"consistency repair":         "0 repaired, nothing to repair, or the plan printed; 1 failed; 2 bad input; 3 a node unreachable; 5 refused (no --yes without a terminal)",
	"consistency undo-repair":    "0 restored (or the plan printed); 1 failed; 2 bad input (not a repair run, no journal at the path); 3 a node unreachable; 5 refused (already undone, no --yes without a terminal)",
	"consistency monitor":        "0 its --duration ended with no mismatch, or it was stopped by a signal (SIGTERM, Ctrl-C), whatever it saw; 1 failed; 2 bad input; 3 a node unreachable at the start; 4 its --duration ended and mismatches were seen during its run",
	"consistency history":        "0 ok; 1 failed (unreadable journal); 2 bad input (no journal at the path)",
	"completion":                 "0 help printed; 2 unknown command or flag",
	"completion bash":            "0 ok; 2 bad input",
	"completion zsh":             "0 ok; 2 bad input",
	"completion fish":            "0 ok; 2 bad input",
	"completion powershell":      "0 ok; 2 bad input",
	"docs":                       "0 help printed; 2 unknown command or flag",
	"docs man":                   "0 written; 1 failed; 2 bad input (no --dir)",
	"docs markdown":              "0 written; 1 failed; 2 bad input (no --dir)",
}

// documentExits appends each command's "Exit codes:" paragraph to its
// help (the root's Long already has the full list).
func documentExits(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if !c.HasParent() {
			return
		}
		text, ok := exitHelp[strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")]
		if !ok {
			return
		}
		long := c.Long
		if long == "" {
			long = c.Short + "."
		}
		c.Long = strings.TrimRight(long, "\n") + "\n\nExit codes: " + text + "."
	}
	walk(root)
}
