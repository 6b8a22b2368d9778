package main

import (
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/internal/cliutil"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// VersionInfo is `migctl version -o json`.
type VersionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	Commit  string `json:"commit,omitempty"`
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print migctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return printVersion(cmd.OutOrStdout(), a.format, versionInfo())
		},
	}
}

// versionInfo is this binary's version; the commit comes from the Go
// toolchain's VCS stamp, when the build had one.
func versionInfo() VersionInfo {
	v := VersionInfo{Version: version, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

// printVersion: one "key value" row each, so no cell is ever an empty gap
// (the commit is unknown in a build without VCS information).
func printVersion(w io.Writer, fm cliutil.Format, v VersionInfo) error {
	return cliutil.Print(w, fm, v, func(tw *tabwriter.Writer) {
		cliutil.Row(tw, "version", v.Version)
		commit := v.Commit
		if commit == "" {
			commit = "unknown (built without VCS information)"
		}
		cliutil.Row(tw, "commit", commit)
		cliutil.Row(tw, "go", v.Go)
	})
}
