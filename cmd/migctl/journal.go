package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/migrate"
)

// journalKinds are the names `migctl journal --kind` takes (the runbook's
// "phase", "check", "heal", ...) and the kinds they stand for as the
// packages store them. A stored name is accepted too.
var journalKinds = []struct {
	name   string
	stored []string
	what   string
}{
	{"phase", []string{migrate.KindPhaseChange}, "phase changes and rollbacks"},
	{"backfill", []string{migrate.KindBackfill}, "backfills"},
	{"schema", []string{migrate.KindSchema}, "schema create, tables create"},
	{"archive", []string{migrate.KindArchive}, "archive dets"},
	{"persistence", []string{migrate.KindPersistence}, "verify persistence"},
	{"import", []string{KindImport}, "sessions import"},
	{"check", []string{consistency.EntryCheck}, "consistency checks (also the monitor's)"},
	{"repair", []string{consistency.EntryRepair}, "consistency repairs"},
	{"undo-repair", []string{consistency.EntryUndo}, "undone repairs"},
	{"heal", []string{cluster.KindHeal, cluster.KindHealStep}, "heals and their steps"},
	{"add-node", []string{cluster.KindAddNode}, "cluster add-node"},
	{"remove-node", []string{cluster.KindRemoveNode}, "cluster remove-node"},
	{"resync", []string{cluster.KindResync}, "cluster resync"},
	{"restore-backup", []string{cluster.KindRestore}, "cluster restore-backup"},
}

// journalKindNames are the accepted --kind names, in the help's order.
func journalKindNames() []string {
	var out []string
	for _, k := range journalKinds {
		out = append(out, k.name)
	}
	return out
}

// storedKinds maps a --kind value to the stored kinds ("" is all).
func storedKinds(kind string) ([]string, error) {
	if kind == "" {
		return nil, nil
	}
	for _, k := range journalKinds {
		if k.name == kind {
			return k.stored, nil
		}
	}
	for _, k := range journalKinds {
		if slices.Contains(k.stored, kind) {
			return []string{kind}, nil
		}
	}
	return nil, cliutil.Usage("--kind %q: not a kind of the journal; want one of %s", kind, strings.Join(journalKindNames(), ", "))
}

// readJournal opens --journal for a command that only reads it: it must
// exist, and nothing is created (journal.ErrNoJournal: "no journal at
// PATH", exit 2).
func (a *app) readJournal() (*journal.Journal, error) {
	return journal.Open(a.journalAt, journal.Options{ReadOnly: true})
}

// existingJournal opens --journal for a command that reads something the
// journal must already hold (a repair to undo, a heal to resume) before it
// writes.
func (a *app) existingJournal() (*journal.Journal, error) {
	return journal.Open(a.journalAt, journal.Options{MustExist: true})
}

func newJournalCmd(a *app) *cobra.Command {
	var kind string
	var limit int
	var kindHelp strings.Builder
	for _, k := range journalKinds {
		fmt.Fprintf(&kindHelp, "  %-15s %s (%s)\n", k.name, k.what, strings.Join(k.stored, ", "))
	}
	cmd := &cobra.Command{
		Use:   "journal",
		Short: "Print migctl's journal: phase changes, backfills, checks, repairs, heals",
		Long: `Prints the entries of migctl's journal (--journal), oldest first: who did
what, when, why (--reason) and with what result. It only reads: a path
where there is no journal is refused ("no journal at PATH"), nothing is
created.

--kind keeps the entries of one kind:

` + kindHelp.String(),
		Example: `  migctl journal --kind phase
  migctl journal --kind heal --limit 20 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kinds, err := storedKinds(kind)
			if err != nil {
				return err
			}
			if limit < 0 {
				return cliutil.Usage("--limit must not be negative")
			}
			j, err := a.readJournal()
			if err != nil {
				return err
			}
			es, err := j.ListKinds(kinds, limit)
			if err != nil {
				return err
			}
			if es == nil {
				es = []journal.Entry{}
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, es, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "SEQ", "TIME", "KIND", "WHO", "REASON", "DATA")
				for _, e := range es {
					cliutil.Row(tw, e.Seq, e.Time.Format("2006-01-02T15:04:05Z"), e.Kind, e.User+"@"+e.Host, e.Reason, cut(string(e.Data), 160))
				}
			})
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "only entries of this kind: "+strings.Join(journalKindNames(), ", "))
	cmd.Flags().IntVar(&limit, "limit", 0, "only the newest N entries")
	_ = cmd.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions(journalKindNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// cut shortens s to at most n bytes, at a character boundary, marking the
// cut with "...".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := max(n-3, 0) // room for the "..."
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
