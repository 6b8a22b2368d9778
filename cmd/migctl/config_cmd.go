package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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
	// Commands the setting reaches: nil for the global flags (every
	// command), else the command paths that have the flag.
	Commands []string `json:"commands,omitempty"`
}

// flagValue prints a flag's value the way it is typed: a list as a,b (not
// Go's [a b]).
func flagValue(f *pflag.Flag) string {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return strings.Join(sv.GetSlice(), ",")
	}
	return f.Value.String()
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
		Short: "Validate --config and the MIGCTL_* variables (no node is contacted) and print the effective settings and where each comes from",
		Long: `Validates --config and every MIGCTL_* variable (a value that does not parse
is exit 2 naming the variable; no node is contacted), then prints the
effective settings: every global flag, and the flags of other commands that
the environment or the file set, each with its source (flag, env, config,
default) and the variable that would override it.`,
		Example: `  migctl --config /etc/migctl/migctl.yaml config check
  MIGCTL_TIMEOUT=10s migctl config check -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := a.effectiveSettings(cmd)
			return cliutil.Print(cmd.OutOrStdout(), a.format, out, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "FLAG", "VALUE", "SOURCE", "ENV", "COMMANDS")
				for _, s := range out {
					cliutil.Row(tw, "--"+s.Flag, s.Value, s.Source, dash(s.Env), commandsCell(s.Commands))
				}
			})
		},
	})
	return cmd
}

// effectiveSettings lists the global flags as `config check` sees them,
// then the other commands' flags that the environment or the file set.
func (a *app) effectiveSettings(cmd *cobra.Command) []EffectiveSetting {
	var out []EffectiveSetting
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		s := EffectiveSetting{Flag: f.Name, Env: flagEnv(f), Value: flagValue(f), Source: "default"}
		switch {
		case f.Changed:
			s.Source = "flag"
		case a.fromEnv[f.Name]:
			s.Source = "env"
		case a.fromConfig[f.Name]:
			s.Source = "config"
		}
		out = append(out, s)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Flag < out[j].Flag })

	// The other commands' flags: one row per flag name and variable, with
	// the commands that have it.
	type key struct{ flag, env, value, source string }
	rows := map[key][]string{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if !c.Runnable() {
			return
		}
		path := c.CommandPath()
		var bind map[string]config.Binding
		if a.cfg != nil {
			bind = a.cfg.For(path)
		}
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			env := flagEnv(f)
			if env == "" {
				env = bind[f.Name].Env
			}
			k := key{flag: f.Name, env: env}
			switch b, inFile := bind[f.Name]; {
			case env != "" && os.Getenv(env) != "":
				k.value, k.source = os.Getenv(env), "env"
			case inFile:
				k.value, k.source = b.Value, "config"
			default:
				return
			}
			rows[k] = append(rows[k], strings.TrimPrefix(path, c.Root().Name()+" "))
		})
	}
	walk(cmd.Root())
	var more []EffectiveSetting
	for k, cmds := range rows {
		sort.Strings(cmds)
		more = append(more, EffectiveSetting{Flag: k.flag, Env: k.env, Value: k.value, Source: k.source, Commands: cmds})
	}
	sort.Slice(more, func(i, j int) bool {
		if more[i].Flag != more[j].Flag {
			return more[i].Flag < more[j].Flag
		}
		return strings.Join(more[i].Commands, " ") < strings.Join(more[j].Commands, " ")
	})
	return append(out, more...)
}

// commandsCell shortens a list of commands for the table.
func commandsCell(cmds []string) string {
	switch {
	case len(cmds) == 0:
		return "all"
	case len(cmds) <= 2:
		return strings.Join(cmds, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(cmds[:2], ", "), len(cmds)-2)
}

// dash is "-" for an empty table cell, so that columns stay aligned and a
// reader sees "none" rather than a gap.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
