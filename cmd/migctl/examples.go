package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Examples: sections of the commands that change a store
// or a cluster (and of the long-running ones), kept in one place so that
// they read alike: the dry run first, then the change with --yes and a
// --reason, the way the runbook runs them. A command that sets its own
// Example keeps it. TestCommandConventions checks that every changing
// command has one, and TestDocsCommandsParse-style parsing of each line
// (TestExamplesParse) that they are real commands.
var examples = map[string]string{
	"phase set": `  migctl phase set phase1 --dry-run
  migctl phase set phase1 --yes --reason "OPS-1 dual-write"
  migctl phase set phase2 --percent 10 --yes --reason "OPS-1 canary reads"
  migctl phase set phase3 --prometheus http://127.0.0.1:9090 --yes --reason "OPS-1 cut over"`,
	"phase rollback": `  migctl phase rollback --dry-run
  migctl phase rollback --yes --reason "read errors after phase3"`,
	"backfill": `  migctl backfill --from dets --to mnesia --dry-run
  migctl backfill --from dets --to mnesia --rate 2000 --yes --reason "OPS-1 backfill"
  migctl backfill status --watch       # from another shell
  migctl backfill --reverse --yes --reason "rolled back from phase3"`,
	"tables create": `  migctl tables create --dry-run
  migctl tables create --yes --reason "OPS-1 session table"`,
	"archive dets": `  migctl archive dets --dry-run
  migctl archive dets --out /var/backups/erlmcp/dets_final.tar.gz --yes --reason "OPS-1 phase3 done"`,
	"verify persistence": `  migctl verify persistence --node erlmcp1@prod --restart-cmd "systemctl restart erlmcp" --dry-run
  migctl verify persistence --node erlmcp1@prod --restart-cmd "systemctl restart erlmcp" --yes --reason "ETS -> DETS check"`,
	"consistency repair": `  migctl consistency repair --source dets --target mnesia --full --dry-run
  migctl consistency repair --source dets --target mnesia --full --yes --reason "OPS-1 mismatches after backfill"
  migctl consistency undo-repair 42 --dry-run   # the run number it printed`,
	"consistency undo-repair": `  migctl consistency history                    # find the repair's run number
  migctl consistency undo-repair 42 --dry-run
  migctl consistency undo-repair 42 --yes --reason "repair went the wrong way"`,
	"consistency monitor": `  migctl consistency monitor --source dets --target mnesia --duration 14d \
      --interval 5m --sample 10000 --alert-on-mismatch --metrics-addr 127.0.0.1:9464
  systemctl stop migctl-monitor   # exit 0; the verdict is in consistency history`,
	"cluster add-node": `  migctl cluster add-node erlmcp4@prod --dry-run
  migctl cluster add-node erlmcp4@prod --yes --reason "OPS-7 capacity"`,
	"cluster remove-node": `  migctl cluster remove-node erlmcp4@prod --dry-run
  migctl cluster remove-node erlmcp4@prod --yes --reason "OPS-8 decommission"`,
	"cluster resync": `  migctl cluster verify-replication      # names the diverged copy
  migctl cluster resync erlmcp2@prod --dry-run
  migctl cluster resync erlmcp2@prod --yes --reason "copy differed after a disk fault"`,
	"cluster heal": `  migctl cluster heal --plan                       # islands, evidence, the winner
  migctl cluster heal --plan -o json > heal-plan.json
  migctl cluster heal --execute --plan-file heal-plan.json --yes --reason "OPS-9 split brain"
  migctl cluster heal --resume h-20261205-0512 --dry-run   # after an interrupted heal`,
	"cluster restore-backup": `  migctl cluster restore-backup --list
  migctl cluster restore-backup /var/lib/migctl/heal-backups/erlmcp_session.bak --dry-run
  migctl cluster restore-backup /var/lib/migctl/heal-backups/erlmcp_session.bak --yes --reason "undo heal"`,
	"cluster watch": `  migctl cluster watch --metrics-addr 127.0.0.1:9465
  migctl cluster watch --all -o json | tee watch.jsonl`,
}

// addExamples gives each command without one its Examples: section.
func addExamples(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if ex, ok := examples[strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")]; ok && c.Example == "" {
			c.Example = ex
		}
	}
	walk(root)
}
