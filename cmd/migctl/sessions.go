package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/exportfile"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/session"
	"github.com/erlmcp/migctl/term"
)

func newSessionsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "Count, read, list, export and import the sessions of one store",
	}
	cmd.AddCommand(newSessionsCountCmd(a), newSessionsGetCmd(a), newSessionsListCmd(a),
		newSessionsExportCmd(a), newSessionsImportCmd(a))
	return cmd
}

// CountResult is `migctl sessions count -o json`.
type CountResult struct {
	Store string `json:"store"`
	Table string `json:"table"`
	Node  string `json:"node"`
	Count int64  `json:"count"`
}

func newSessionsCountCmd(a *app) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "count",
		Short: "Number of sessions in a store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			n, err := s.Count(cmd.Context())
			if err != nil {
				return err
			}
			r := CountResult{Store: string(s.Spec().Kind), Table: s.Spec().Table, Node: s.Node(), Count: n}
			return cliutil.Print(cmd.OutOrStdout(), a.format, r, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "STORE", "TABLE", "NODE", "COUNT")
				cliutil.Row(tw, r.Store, r.Table, r.Node, r.Count)
			})
		},
	}
	sf.addFlags(cmd, true)
	return cmd
}

func newSessionsGetCmd(a *app) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one session (without touching it: last_accessed is not rewritten)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			blob, ok, err := s.Get(cmd.Context(), []byte(args[0]))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("session %q not found in %s on %s", args[0], s.Spec(), s.Node()) // 1
			}
			sess, err := session.Parse(blob)
			if err != nil {
				return err
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, sess, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "id", sess.IDString())
				cliutil.Row(tw, "created_at", msTime(sess.CreatedAt))
				cliutil.Row(tw, "last_accessed", msTime(sess.LastAccessed))
				cliutil.Row(tw, "timeout_ms", timeoutText(sess))
				cliutil.Row(tw, "metadata", term.Format(sess.Metadata))
				cliutil.Row(tw, "bytes", len(blob))
			})
		},
	}
	sf.addFlags(cmd, true)
	return cmd
}

// ListEntry is one line of `migctl sessions list -o json`.
type ListEntry struct {
	ID           string `json:"id"`
	CreatedAt    int64  `json:"created_at"`
	LastAccessed int64  `json:"last_accessed"`
	TimeoutMs    any    `json:"timeout_ms"`
	Bytes        int    `json:"bytes"`
}

func newSessionsListCmd(a *app) *cobra.Command {
	var sf storeFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sessions (id, times, size); --limit bounds the output",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit <= 0 {
				return cliutil.Usage("--limit must be positive")
			}
			s, err := sf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			var out []ListEntry
			var cur backends.Cursor
			for len(out) < limit {
				b, err := s.Stream(cmd.Context(), cur, min(1000, limit-len(out)))
				if err != nil {
					return err
				}
				for _, r := range b.Rows {
					e := ListEntry{ID: string(r.ID), Bytes: len(r.Blob)}
					if sess, err := session.Parse(r.Blob); err == nil {
						e.CreatedAt, e.LastAccessed = sess.CreatedAt, sess.LastAccessed
						e.TimeoutMs = timeoutJSON(sess)
					}
					out = append(out, e)
				}
				if b.Done {
					break
				}
				cur = b.Next
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, out, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "ID", "CREATED", "LAST_ACCESSED", "TIMEOUT_MS", "BYTES")
				for _, e := range out {
					cliutil.Row(tw, e.ID, msTime(e.CreatedAt), msTime(e.LastAccessed), e.TimeoutMs, e.Bytes)
				}
			})
		},
	}
	sf.addFlags(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 100, "most sessions to list")
	return cmd
}

// ExportResult is `migctl sessions export -o json`.
type ExportResult struct {
	File     string  `json:"file"`
	Node     string  `json:"node"`
	Store    string  `json:"store"`
	Count    int64   `json:"count"`
	Bytes    int64   `json:"bytes"`
	SHA256   string  `json:"sha256"`
	Seconds  float64 `json:"seconds"`
	RowsPerS float64 `json:"rows_per_second"`
}

func newSessionsExportCmd(a *app) *cobra.Command {
	var sf storeFlags
	var outPath string
	var batch int
	cmd := &cobra.Command{
		Use:   "export --out FILE",
		Short: "Write every session of a store to a checksummed file that import restores byte-identically",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if outPath == "" {
				return cliutil.Usage("--out is required")
			}
			if batch <= 0 {
				return cliutil.Usage("--batch must be positive")
			}
			s, err := sf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			total, err := s.Count(cmd.Context())
			if err != nil {
				return err
			}
			// Write to a temporary file and rename it into place: a
			// failed or interrupted export never leaves a file that looks
			// complete.
			// The runbook's /var/backups/erlmcp may not exist yet: make
			// it (private: sessions are user data).
			if err := os.MkdirAll(filepath.Dir(outPath), 0o750); err != nil {
				return cliutil.Usage("cannot create the folder of --out %s: %v (hint: choose a writable folder)", filepath.Dir(outPath), err)
			}
			tmp, err := os.CreateTemp(filepath.Dir(outPath), ".migctl-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			start := time.Now()
			prog := cliutil.NewProgress(a.err, a.log, "export", total)
			tr, err := exportfile.Export(cmd.Context(), s, tmp, batch, func(n int) { prog.Add(int64(n)) })
			prog.Done()
			if err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				return err
			}
			st, _ := tmp.Stat()
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), outPath); err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			r := ExportResult{File: outPath, Node: s.Node(), Store: s.Spec().String(), Count: tr.Count,
				Bytes: st.Size(), SHA256: tr.SHA256, Seconds: el, RowsPerS: float64(tr.Count) / el}
			return cliutil.Print(cmd.OutOrStdout(), a.format, r, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "exported", r.Count, "sessions from", r.Store, "on", r.Node)
				cliutil.Row(tw, "file", r.File, r.Bytes, "bytes")
				cliutil.Row(tw, "sha256", r.SHA256)
				cliutil.Row(tw, "rate", fmt.Sprintf("%.0f rows/s in %.2fs", r.RowsPerS, r.Seconds))
			})
		},
	}
	sf.addFlags(cmd, true)
	cmd.Flags().StringVar(&outPath, "out", "", "file to write")
	cmd.Flags().IntVar(&batch, "batch", 1000, "rows per round trip")
	return cmd
}

// ImportResult is `migctl sessions import -o json`, and what the journal
// records of an import (KindImport).
type ImportResult struct {
	File    string `json:"file"`
	SHA256  string `json:"sha256,omitempty"`
	Node    string `json:"node"`
	Store   string `json:"store"`
	Mode    string `json:"mode"`
	InFile  int64  `json:"in_file"`
	Written int64  `json:"written"`
	Skipped int64  `json:"skipped"`
	DryRun  bool   `json:"dry_run"`
	// State is started (in the journal while it runs, or after a crash),
	// done or failed.
	State string `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
	Seq   uint64 `json:"journal_seq,omitempty"`
}

// KindImport is the journal kind of `sessions import`.
const KindImport = "sessions.import"

func newSessionsImportCmd(a *app) *cobra.Command {
	var sf storeFlags
	var inPath, mode, reason string
	var dryRun, yes bool
	var batch int
	cmd := &cobra.Command{
		Use:   "import --in FILE",
		Short: "Restore sessions from an export file (verified in full before anything is written)",
		Long: `Verifies the whole file (checksums) before anything is written, then writes
its sessions into the store. --mode decides what happens to a session the
store already holds: if_newer (the default) replaces it only with a newer
copy (by last_accessed), so an import never undoes what clients wrote
since the export and can be run again after an interruption; if_absent
only fills in missing sessions; overwrite puts the file's copy back
whatever the store holds. The import is journaled (kind import) with the
file's checksum, the mode, the counts and --reason.`,
		Example: `  migctl sessions import --store mnesia --in sessions.mexp --dry-run
  migctl sessions import --store mnesia --in sessions.mexp --yes --reason "OPS-12 restore"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if inPath == "" {
				return cliutil.Usage("--in is required")
			}
			pm := backends.PutMode(mode)
			switch pm {
			case backends.Overwrite, backends.IfAbsent, backends.IfNewer:
			default:
				return cliutil.Usage("--mode %q: want overwrite, if_absent or if_newer", mode)
			}
			f, err := os.Open(inPath)
			if err != nil {
				return cliutil.Usage("%w", err)
			}
			defer f.Close()
			// Verify the whole file before touching the store.
			hdr, tr, err := exportfile.Verify(f)
			if err != nil {
				return cliutil.Usage("%s: %w; nothing was imported", inPath, err)
			}
			s, err := sf.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			if _, err := s.Describe(cmd.Context()); err != nil {
				return err
			}
			r := ImportResult{File: inPath, SHA256: tr.SHA256, Node: s.Node(), Store: s.Spec().String(), Mode: mode, InFile: tr.Count, DryRun: dryRun}
			if !dryRun {
				prompt := fmt.Sprintf("Import %d sessions (exported from %s on %s) into %s on %s, mode %s?",
					tr.Count, hdr.Store, hdr.Node, s.Spec(), s.Node(), mode)
				if err := cliutil.Confirm(a.in, a.err, yes, prompt); err != nil {
					return err
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				// Journaled before the first write, the result after the
				// last: a crash leaves an entry in state "started".
				j, err := a.journal()
				if err != nil {
					return err
				}
				r.State = "started"
				if r.Seq, err = j.Append(KindImport, reason, r); err != nil {
					return err
				}
				prog := cliutil.NewProgress(a.err, a.log, "import", tr.Count)
				res, err := exportfile.Import(cmd.Context(), s, f, batch, pm, func(n int) { prog.Add(int64(n)) })
				prog.Done()
				r.Written, r.Skipped = int64(res.Written), int64(res.Skipped)
				r.State = "done"
				if err != nil {
					r.State, r.Error = "failed", err.Error()
				}
				if jerr := j.Update(r.Seq, r); jerr != nil {
					a.log.Warn("recording the import's result in the journal", "seq", r.Seq, "err", jerr)
				}
				if err != nil {
					return fmt.Errorf("import stopped after %d written (journal #%d): %w", r.Written, r.Seq, err)
				}
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, r, func(tw *tabwriter.Writer) {
				if r.DryRun {
					cliutil.Row(tw, "dry run: would import", r.InFile, "sessions into", r.Store, "on", r.Node, "mode", r.Mode)
					return
				}
				cliutil.Row(tw, "imported", r.Written, "written,", r.Skipped, "skipped, into", r.Store, "on", r.Node, "mode", r.Mode)
				cliutil.Row(tw, "journal", fmt.Sprintf("#%d", r.Seq))
			})
		},
	}
	sf.addFlags(cmd, true)
	cmd.Flags().StringVar(&inPath, "in", "", "export file to read")
	cmd.Flags().StringVar(&mode, "mode", string(backends.IfNewer), "if_newer (a session in the store is replaced only by a newer copy, by last_accessed), if_absent or overwrite")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "verify the file and print what would be imported; change nothing")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (journaled)")
	cmd.Flags().IntVar(&batch, "batch", 1000, "rows per round trip")
	return cmd
}

func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func timeoutText(s session.Session) string {
	if s.Infinite {
		return "infinity"
	}
	return fmt.Sprint(s.TimeoutMs)
}

func timeoutJSON(s session.Session) any {
	if s.Infinite {
		return "infinity"
	}
	return s.TimeoutMs
}

var _ = errors.New
