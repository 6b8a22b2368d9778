package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/erlmcp/migctl/internal/cliutil"
)

// newDocsCmd is the hidden `migctl docs man|markdown --dir DIR`: man pages
// (section 1) and Markdown pages generated from the command tree, for
// `make man` and packaging. The pages describe a command tree built afresh
// from a neutral environment, so the MIGCTL_* variables and the home
// directory of whoever runs it do not leak into the defaults they show.
func newDocsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "Generate man pages or Markdown reference pages from the commands",
		Hidden: true,
	}
	var dir string
	gen := func(use, short string, write func(root *cobra.Command, dir string) error) *cobra.Command {
		c := &cobra.Command{
			Use:   use + " --dir DIR",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if dir == "" {
					return cliutil.Usage("--dir is required")
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				root := neutralRoot()
				if err := write(root, dir); err != nil {
					return err
				}
				n, _ := filepath.Glob(filepath.Join(dir, "migctl*"))
				fmt.Fprintf(cmd.OutOrStdout(), "%d pages in %s\n", len(n), dir)
				return nil
			},
		}
		c.Flags().StringVar(&dir, "dir", "", "directory to write the pages to (created if missing)")
		return c
	}
	cmd.AddCommand(
		gen("man", "man pages, section 1 (migctl.1, migctl-phase-set.1, ...)", func(root *cobra.Command, dir string) error {
			hdr := &doc.GenManHeader{
				Title:   "MIGCTL",
				Section: "1",
				Source:  "migctl " + version,
				Manual:  "migctl manual",
			}
			// Reproducible pages: the date comes from SOURCE_DATE_EPOCH
			// (cobra reads it; make man sets it to the last commit's time),
			// else from the commit time the Go toolchain stamped into this
			// binary, else today. The Unix epoch (1970) was reproducible
			// but wrong on every page.
			if os.Getenv("SOURCE_DATE_EPOCH") == "" {
				t := buildTime()
				hdr.Date = &t
			}
			return doc.GenManTree(root, hdr, dir)
		}),
		gen("markdown", "Markdown pages (migctl.md, migctl_phase_set.md, ...)", func(root *cobra.Command, dir string) error {
			return doc.GenMarkdownTree(root, dir)
		}),
	)
	return cmd
}

// neutralRoot builds migctl's command tree as a user with no MIGCTL_*
// variables and home "~" would see it: defaults read from the environment
// at construction are the built-in ones, the journal's default path is
// "~/.local/state/migctl/journal.db". The docs command itself is left out.
func neutralRoot() *cobra.Command {
	saved := map[string]*string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "MIGCTL_") || k == "ERL_EPMD_PORT" || k == "XDG_STATE_HOME" || k == "HOME" {
			v := os.Getenv(k)
			saved[k] = &v
			os.Unsetenv(k)
		}
	}
	os.Setenv("HOME", "~")
	defer func() {
		os.Unsetenv("HOME")
		for k, v := range saved {
			os.Setenv(k, *v)
		}
	}()
	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	for _, c := range root.Commands() {
		if c.Name() == "docs" {
			root.RemoveCommand(c)
		}
	}
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return root
}

// buildTime is the commit time of this build (vcs.time), or now.
func buildTime() time.Time {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					return t.UTC()
				}
			}
		}
	}
	return time.Now().UTC()
}
