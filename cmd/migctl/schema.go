package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
)

// printSchema prints a schema or tables report. The result line says what
// happened, err included: a refused create used to print the plan's
// "created", and tables create a bare "tables".
func (a *app) printSchema(cmd *cobra.Command, rep *migrate.SchemaReport, err error) error {
	if rep == nil {
		return nil
	}
	r := *rep
	switch {
	case errors.Is(err, migrate.ErrExists):
		r.Action, r.Comment = "refused", "nothing changed"
	case err != nil:
		r.Action, r.Comment = "failed", err.Error()
	case r.Action == "tables":
		r.Action = "done"
	}
	return cliutil.Print(cmd.OutOrStdout(), a.format, r, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "NODE", "DISC SCHEMA", "MNESIA RUNNING")
		for _, n := range r.Nodes {
			cliutil.Row(tw, n.Node, yesNo(n.HasSchema), yesNo(n.MnesiaRunning))
		}
		if len(r.Tables) > 0 {
			cliutil.Row(tw)
			cliutil.Row(tw, "TABLE", "STATE")
			for _, t := range r.Tables {
				cliutil.Row(tw, t.Table, t.State)
			}
		}
		cliutil.Row(tw)
		res := r.Action
		if r.Comment != "" {
			res += ": " + r.Comment
		}
		cliutil.Row(tw, "result", res)
	})
}

func newSchemaCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Create the Mnesia schema on the nodes (refuses to touch an existing one)",
	}
	var ch migChange
	var oldForce bool
	create := &cobra.Command{
		Use:   "create",
		Short: "A disc schema on every node of --nodes; mnesia is restarted on each",
		Example: `  migctl schema create --dry-run
  migctl schema create --yes --reason "phase0: Mnesia for the session store"
  # never on a cluster that holds data: deletes the schema and every table
  migctl schema create --delete-existing-schema --yes --reason "rebuild the staging cluster"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// --force on schema create used to delete the schema; --force
			// elsewhere overrides a gate. The old spelling is refused
			// rather than reinterpreted, so a script written for it
			// neither deletes nor silently stops deleting.
			if oldForce {
				return cliutil.Usage("schema create --force: renamed, it deleted the schema; to delete the existing schema and every table in it pass --delete-existing-schema (nothing changed)")
			}
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			plan := migrate.SchemaOptions{Force: ch.force, DryRun: true}
			rep, err := m.CreateSchema(ctx, plan)
			if err != nil || ch.dryRun {
				if perr := a.printSchema(cmd, rep, err); perr != nil {
					return perr
				}
				return err
			}
			prompt := fmt.Sprintf("create a Mnesia schema on %d node(s)?", len(m.Nodes()))
			if ch.force {
				prompt = fmt.Sprintf("DELETE the existing Mnesia schema and every table in it, and create a new one on %d node(s)?", len(m.Nodes()))
			}
			if err := cliutil.Confirm(a.in, a.err, ch.yes, prompt); err != nil {
				return err
			}
			rep, err = m.CreateSchema(ctx, migrate.SchemaOptions{Force: ch.force, Reason: ch.reason})
			if perr := a.printSchema(cmd, rep, err); perr != nil {
				return perr
			}
			return err
		},
	}
	ch.add(create, false)
	create.Flags().BoolVar(&ch.force, "delete-existing-schema", false, "DELETE an existing schema and every table in it first (journaled)")
	create.Flags().BoolVar(&oldForce, "force", false, "renamed --delete-existing-schema; refused")
	_ = create.Flags().MarkHidden("force")
	cmd.AddCommand(create)
	return cmd
}

func newTablesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tables",
		Short: "Create the Mnesia session table and the migration phase table",
	}
	var ch migChange
	var table string
	create := &cobra.Command{
		Use:   "create",
		Short: "disc_copies on every node; an existing table must have erlmcp's layout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			o := migrate.TablesOptions{SessionTable: table, DryRun: ch.dryRun, Reason: ch.reason}
			if !ch.dryRun {
				if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("create tables %s and migctl_migration on %d node(s)?", table, len(m.Nodes()))); err != nil {
					return err
				}
			}
			rep, err := m.CreateTables(ctx, o)
			if perr := a.printSchema(cmd, rep, err); perr != nil {
				return perr
			}
			return err
		},
	}
	ch.add(create, false)
	// --mnesia-table, as on every other command that names the Mnesia
	// session table (one name for one variable); --table was its name here.
	create.Flags().StringVar(&table, "mnesia-table", backends.DefaultMnesiaTable, "the Mnesia session table (env MIGCTL_MNESIA_TABLE)")
	withEnv(create.Flags(), "mnesia-table", "MIGCTL_MNESIA_TABLE")
	deprecatedAlias(create.Flags(), "table", "mnesia-table")
	cmd.AddCommand(create)
	return cmd
}

func newArchiveCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "Archive the old store after the cut-over",
	}
	var ch migChange
	var out string
	var remote bool
	dets := &cobra.Command{
		Use:   "dets",
		Short: "tar.gz of every DETS file the nodes have open, with a sha256 manifest, verified after writing",
		Long: `Reads each DETS file directly when its node runs on this machine (no load on
the node), otherwise streams it through the node; the node syncs the table
first. Run it when nothing writes the DETS files any more (phase3).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			if out == "" {
				out = fmt.Sprintf("dets_archive_%s.tar.gz", time.Now().UTC().Format("20060102T150405Z"))
			}
			o := migrate.ArchiveOptions{Out: out, Remote: remote, DryRun: ch.dryRun, Reason: ch.reason}
			if !ch.dryRun {
				if err := cliutil.Confirm(a.in, a.err, ch.yes, "archive the DETS files to "+out+"?"); err != nil {
					return err
				}
			}
			rep, err := m.ArchiveDETS(ctx, o)
			if rep != nil {
				if perr := printArchive(cmd.OutOrStdout(), a.format, rep, ch.dryRun); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	ch.add(dets, false)
	dets.Flags().StringVar(&out, "out", "", "the archive to write (default dets_archive_TIME.tar.gz here)")
	dets.Flags().BoolVar(&remote, "remote", false, "stream through the nodes even when the files are readable here")
	cmd.AddCommand(dets)
	return cmd
}

// printArchive prints an archive report. A dry run has no archive to
// checksum or verify: it says so instead of "verified=false".
func printArchive(w io.Writer, fm cliutil.Format, rep *migrate.ArchiveReport, dryRun bool) error {
	return cliutil.Print(w, fm, rep, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "NODE", "FILE", "BYTES", "SHA256", "VIA")
		for _, f := range rep.Files {
			cliutil.Row(tw, f.Node, f.Source, f.Bytes, dash(f.SHA256), f.Via)
		}
		cliutil.Row(tw)
		abs, _ := filepath.Abs(rep.Path)
		cliutil.Row(tw, "archive", abs)
		if dryRun {
			cliutil.Row(tw, "result", "plan only (--dry-run): nothing written")
			return
		}
		cliutil.Row(tw, "sha256", rep.SHA256)
		cliutil.Row(tw, "verified", rep.Verified)
		res := "written and verified"
		if !rep.Verified {
			res = "written, NOT verified"
		}
		cliutil.Row(tw, "result", res)
	})
}

// PersistencePlan is `migctl verify persistence --dry-run -o json`.
type PersistencePlan struct {
	DryRun     bool     `json:"dry_run"`
	Node       string   `json:"node"`
	Store      string   `json:"store"`
	File       string   `json:"file,omitempty"`
	RestartCmd string   `json:"restart_cmd"`
	Wait       string   `json:"wait"`
	Steps      []string `json:"steps"`
}

func newVerifyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Checks of a migration step",
	}
	var ch migChange
	var node, restartCmd, table, file string
	var wait time.Duration
	pers := &cobra.Command{
		Use:   "persistence",
		Short: "ETS -> DETS: restart the node through --restart-cmd; every session no client touched meanwhile must be back unchanged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if restartCmd == "" {
				return cliutil.Usage("--restart-cmd is required (for example: '/opt/erlmcp/current/bin/erlmcp restart')")
			}
			ctx := cmd.Context()
			m, err := a.migrator(ctx)
			if err != nil {
				return err
			}
			if node == "" {
				node = m.Nodes()[0]
			}
			if ch.dryRun {
				p := PersistencePlan{DryRun: true, Node: node, Store: "dets:" + table, File: file, RestartCmd: restartCmd, Wait: wait.String(),
					Steps: []string{"snapshot the sessions (count, checksum, each session's digest)", "run the restart command", "wait for the node and its store", "compare every session no client touched"}}
				return cliutil.Print(cmd.OutOrStdout(), a.format, p, func(tw *tabwriter.Writer) {
					cliutil.Row(tw, "node", p.Node)
					cliutil.Row(tw, "store", p.Store)
					if p.File != "" {
						cliutil.Row(tw, "file", p.File)
					}
					cliutil.Row(tw, "restart", p.RestartCmd)
					cliutil.Row(tw, "wait", p.Wait)
					for i, s := range p.Steps {
						cliutil.Row(tw, fmt.Sprintf("step %d", i+1), s)
					}
					cliutil.Row(tw, "result", "plan only (--dry-run): nothing restarted")
				})
			}
			if err := cliutil.Confirm(a.in, a.err, ch.yes, fmt.Sprintf("restart %s with %q?", node, restartCmd)); err != nil {
				return err
			}
			o := migrate.PersistOptions{Node: node, Wait: wait, Reason: ch.reason,
				Store: backends.Spec{Kind: backends.KindDETS, Table: table, File: file},
				Restart: func(ctx context.Context) error {
					c := exec.CommandContext(ctx, "sh", "-c", restartCmd)
					c.Stdout, c.Stderr = a.err, a.err
					c.Env = os.Environ()
					return c.Run()
				}}
			rep, err := m.VerifyPersistence(ctx, o)
			if rep != nil {
				if perr := cliutil.Print(cmd.OutOrStdout(), a.format, rep, func(tw *tabwriter.Writer) {
					cliutil.Row(tw, "", "SESSIONS", "CHECKSUM")
					cliutil.Row(tw, "before", rep.Before.Count, fmt.Sprintf("%016x", rep.Before.Sum))
					cliutil.Row(tw, "after", rep.After.Count, fmt.Sprintf("%016x", rep.After.Sum))
					fmt.Fprintf(tw, "%s on %s: restored=%s (restart took %.1fs)\n", rep.Store, rep.Node, cliutil.Cell(rep.Restored), rep.Seconds)
					for _, l := range rep.Lines() {
						fmt.Fprintln(tw, l)
					}
				}); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	ch.add(pers, false)
	pers.Flags().StringVar(&node, "node", "", "node to restart (default: the first of --nodes)")
	pers.Flags().StringVar(&restartCmd, "restart-cmd", "", "shell command that restarts the node (env MIGCTL_RESTART_CMD)")
	withEnv(pers.Flags(), "restart-cmd", "MIGCTL_RESTART_CMD")
	pers.Flags().StringVar(&table, "dets-table", backends.DefaultDETSTable, "DETS session table (env MIGCTL_DETS_TABLE)")
	withEnv(pers.Flags(), "dets-table", "MIGCTL_DETS_TABLE")
	pers.Flags().StringVar(&file, "dets-file", "", "DETS file, when the application does not have the table open (env MIGCTL_DETS_FILE)")
	withEnv(pers.Flags(), "dets-file", "MIGCTL_DETS_FILE")
	pers.Flags().DurationVar(&wait, "wait", 60*time.Second, "how long to wait for the node and its store after the restart")
	cmd.AddCommand(pers)
	return cmd
}
