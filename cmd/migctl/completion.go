package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/config"
	"github.com/erlmcp/migctl/migrate"
)

// Shell completion of values: the fixed ones (phases, stores, -o, modes,
// heal steps) and the nodes, which come from the command line, MIGCTL_NODES
// or the configuration file (completion runs without PersistentPreRun, so
// it reads them itself; it contacts no node).

var phaseNames = []string{
	migrate.Phase0.String() + "\told store only",
	migrate.Phase1.String() + "\tdual-write, read the old store",
	migrate.Phase2.String() + "\tdual-write, read the new store for --percent",
	migrate.Phase3.String() + "\tnew store only",
}

// fixedValues completes flags by name, on whichever command has them.
func fixedValues() map[string][]string {
	stores := []string{string(backends.KindETS), string(backends.KindDETS), string(backends.KindMnesia)}
	return map[string][]string{
		"output":     {"table", "json"},
		"log-level":  {"debug", "info", "warn", "error"},
		"log-format": {"text", "json"},
		"store":      stores,
		"source":     stores,
		"target":     stores,
		"from":       stores,
		"to":         stores,
		"mode":       {string(backends.IfNewer), string(backends.IfAbsent), string(backends.Overwrite)},
		"stop-after": cluster.HealSteps(),
	}
}

// nodeFlags take one node (or a list, for --nodes and --ssh-nodes).
var nodeFlags = []string{"nodes", "node", "source-node", "target-node", "winner", "ssh-nodes"}

// nodeArgs are the commands whose argument is a node.
var nodeArgs = map[string]bool{"cluster add-node": false, "cluster remove-node": true, "cluster resync": true}

// completionNodes are the nodes migctl would use: --nodes, MIGCTL_NODES,
// then --config / MIGCTL_CONFIG's nodes.
func completionNodes(cmd *cobra.Command) []string {
	if f := cmd.Flags().Lookup("nodes"); f != nil && f.Changed {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			return sv.GetSlice()
		}
	}
	if v := os.Getenv("MIGCTL_NODES"); v != "" {
		return strings.Split(v, ",")
	}
	path := os.Getenv("MIGCTL_CONFIG")
	if f := cmd.Flags().Lookup("config"); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path == "" {
		return nil
	}
	c, err := config.Load(path)
	if err != nil {
		return nil
	}
	return c.Nodes
}

func completeNodes(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	return completionNodes(cmd), cobra.ShellCompDirectiveNoFileComp
}

// addCompletions registers value completion on every command of the tree.
func addCompletions(root *cobra.Command) {
	fixed := fixedValues()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		// Only flags this command defines: cobra keeps completion per
		// defining command (persistent ones on their parent).
		defined := func(fs *pflag.FlagSet) {
			fs.VisitAll(func(f *pflag.Flag) {
				if vals, ok := fixed[f.Name]; ok {
					_ = c.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
				}
				for _, n := range nodeFlags {
					if f.Name == n {
						_ = c.RegisterFlagCompletionFunc(f.Name, completeNodes)
					}
				}
			})
		}
		defined(c.LocalNonPersistentFlags())
		defined(c.PersistentFlags())
		path := strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
		switch {
		case path == "phase set" && c.ValidArgsFunction == nil:
			c.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return phaseNames, cobra.ShellCompDirectiveNoFileComp
			}
		case nodeArgs[path] && c.ValidArgsFunction == nil:
			// remove-node and resync name a node of the cluster; add-node
			// names a new one, which no list holds.
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return completeNodes(cmd, args, s)
			}
		}
	}
	walk(root)
}
