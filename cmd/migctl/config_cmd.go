package main

import (
	"io"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/erlmcp/migctl/config"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// EffectiveSetting is one line of `migctl config check -o json`.
type EffectiveSetting struct {
	Flag   string `json:"flag"`
	Env    string `json:"env"`
	Value  string `json:"value"`
	Source string `json:"source"` // flag, env, config, default
}

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check the configuration file, or print a documented example",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "example",
		Short: "Print a documented example configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), config.Example)
			return err
		},
	}, &cobra.Command{
		Use:   "check",
		Short: "Validate --config (no node is contacted) and print the effective settings and where each comes from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []EffectiveSetting
			cmd.Flags().VisitAll(func(f *pflag.Flag) {
				if f.Name == "help" {
					return
				}
				s := EffectiveSetting{Flag: f.Name, Value: f.Value.String(), Source: "default"}
				if a.cfg != nil {
					s.Env = a.cfg.For(cmd.CommandPath())[f.Name].Env
				}
				switch {
				case f.Changed:
					s.Source = "flag"
				case s.Env != "" && os.Getenv(s.Env) != "":
					s.Source = "env"
				case a.fromConfig[f.Name]:
					s.Source = "config"
				}
				out = append(out, s)
			})
			sort.Slice(out, func(i, j int) bool { return out[i].Flag < out[j].Flag })
			return cliutil.Print(cmd.OutOrStdout(), a.format, out, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "FLAG", "VALUE", "SOURCE", "ENV")
				for _, s := range out {
					cliutil.Row(tw, "--"+s.Flag, s.Value, s.Source, s.Env)
				}
			})
		},
	})
	return cmd
}
