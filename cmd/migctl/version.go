package main

import (
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
			v := VersionInfo{Version: version, Go: runtime.Version()}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v.Commit = s.Value
					}
				}
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, v, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "migctl", v.Version, v.Commit, v.Go)
			})
		},
	}
}
