package main

import (
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
)

func newJournalCmd(a *app) *cobra.Command {
	var kind string
	var limit int
	cmd := &cobra.Command{
		Use:   "journal",
		Short: "Print migctl's journal: phase changes, backfills, checks, repairs, heals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := a.journal()
			if err != nil {
				return err
			}
			es, err := j.List(kind, limit)
			if err != nil {
				return err
			}
			if es == nil {
				es = []journal.Entry{}
			}
			return cliutil.Print(cmd.OutOrStdout(), a.format, es, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "SEQ", "TIME", "KIND", "WHO", "REASON", "DATA")
				for _, e := range es {
					data := string(e.Data)
					if len(data) > 160 {
						data = data[:157] + "..."
					}
					cliutil.Row(tw, e.Seq, e.Time.Format("2006-01-02T15:04:05Z"), e.Kind, e.User+"@"+e.Host, e.Reason, data)
				}
			})
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "only entries of this kind (phase, backfill, check, repair, heal, ...)")
	cmd.Flags().IntVar(&limit, "limit", 0, "only the newest N entries")
	return cmd
}
