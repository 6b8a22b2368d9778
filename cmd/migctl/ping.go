package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/internal/cliutil"
)

func newPingCmd(a *app) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "ping",
		Short: "Check every node: reachable, OTP release, Mnesia, which session stores exist, round trip",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nodes, err := a.needNodes()
			if err != nil {
				return err
			}
			c, err := a.erlClient(cmd.Context())
			if err != nil {
				return err
			}
			specs := sf.allSpecs()
			res := make([]backends.PingResult, len(nodes))
			var wg sync.WaitGroup
			for i, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res[i] = backends.Ping(cmd.Context(), c, n, specs)
				}()
			}
			wg.Wait()
			err = cliutil.Print(cmd.OutOrStdout(), a.format, res, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "NODE", "REACHABLE", "OTP", "MNESIA", "RTT_MS", "STORES")
				for _, r := range res {
					if !r.Reachable || r.Error != "" {
						cliutil.Row(tw, r.Node, "no", "-", "-", "-", r.Error+hintSuffix(r.Hint))
						continue
					}
					cliutil.Row(tw, r.Node, "yes", r.OTPRelease, yesNo(r.MnesiaRunning), fmt.Sprintf("%.2f", r.RoundTripMs), storesText(r.Stores))
				}
			})
			if err != nil {
				return err
			}
			for _, r := range res {
				if !r.Reachable || r.Error != "" {
					// The verdict (the table names the node): 3, as for
					// any command that cannot reach a node.
					return cliutil.WithCode(cliutil.ExitUnreachable, fmt.Errorf("%w: %s unreachable", cliutil.ErrSilent, r.Node))
				}
			}
			return nil
		},
	}
	sf.addFlags(cmd, false)
	return cmd
}

func storesText(stores []backends.Info) string {
	var parts []string
	for _, s := range stores {
		if !s.Exists {
			continue
		}
		p := fmt.Sprintf("%s:%s=%d", s.Spec.Kind, s.Spec.Table, s.Size)
		if s.Opening {
			p = fmt.Sprintf("%s:%s=opening(repairing after a crash?)", s.Spec.Kind, s.Spec.Table)
		} else if s.Layout != "" && s.Layout != "ok" {
			p += "(not sessions: " + s.Layout + ")"
		}
		parts = append(parts, p)
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func hintSuffix(h string) string {
	if h == "" {
		return ""
	}
	return " (hint: " + h + ")"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

var _ = errors.New
