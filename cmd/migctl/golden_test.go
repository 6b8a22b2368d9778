package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/migrate"
)

// go test ./cmd/migctl -run Golden -update rewrites testdata/*.golden;
// review the diff like code.
var update = flag.Bool("update", false, "rewrite the golden files of TestGoldenPrinters")

// goldenCase prints one representative report in the given format.
type goldenCase struct {
	name  string
	print func(w io.Writer, fm cliutil.Format) error
}

func goldenCases() []goldenCase {
	t0 := time.Date(2026, 12, 5, 5, 0, 0, 0, time.UTC)
	nodes := []string{"erlmcp1@prod", "erlmcp2@prod", "erlmcp3@prod"}
	committed := &migrate.ChangeRecord{Seq: 12, From: migrate.Phase1, FromPercent: 100, To: migrate.Phase2, ToPercent: 10,
		Nodes: nodes, Mode: "mnesia", State: "committed", Switched: nodes, CommitMs: 4.2,
		Gates: []migrate.Gate{{Name: "backfill_complete", OK: true, Value: "journal #9: 60611 written, 3937 skipped"}}}
	planned := *committed
	planned.State, planned.Switched, planned.CommitMs, planned.Seq = "dry-run", nil, 0, 0
	planned.Gates = []migrate.Gate{{Name: "backfill_complete", OK: false, Forced: true, Value: "no complete backfill in the journal"}}
	schema := &migrate.SchemaReport{Action: "created", Nodes: []migrate.SchemaNode{
		{Node: nodes[0], HasSchema: true, MnesiaRunning: true}, {Node: nodes[1], HasSchema: true, MnesiaRunning: false}}}
	tables := &migrate.SchemaReport{Action: "tables", Nodes: schema.Nodes, Tables: []migrate.TableState{
		{Table: "erlmcp_session", State: "created"}, {Table: "migctl_migration", State: "exists"}}}
	archive := &migrate.ArchiveReport{Path: "/var/backups/erlmcp/dets.tar.gz", Files: []migrate.ArchivedFile{
		{Node: nodes[0], Source: "/var/lib/erlmcp/dets/erlmcp_sessions.dets", Bytes: 5464, Via: "local"}}}
	heal := &cluster.HealReport{ID: "h-20261205-0500", Winner: nodes[:2], Losers: nodes[2:], Healed: true,
		Duration: 2345 * time.Millisecond, LongestFence: 87 * time.Millisecond,
		Steps: []cluster.StepResult{
			{Step: "check", Detail: "2 islands", Duration: 12 * time.Millisecond},
			{Step: "backup", Detail: "2 tables", Duration: 230 * time.Millisecond},
			{Step: "merge", Detail: "412 changes", Duration: 95 * time.Millisecond}},
		Backups: []cluster.Backup{{Node: nodes[0], Table: "erlmcp_session", File: "/var/lib/migctl/heal/h1/erlmcp_session.bak", Count: 60000}},
		Merged:  []cluster.MergeResult{{Table: "erlmcp_session", Written: 400, Skipped: 10, Deleted: 2, Kept: 1}}}
	status := &cluster.Status{Time: t0, Verdict: cluster.Partitioned,
		Nodes: []cluster.NodeView{
			{Node: nodes[0], Reachable: true, Mnesia: "yes", DBNodes: nodes, RunningDBNodes: nodes[:2]},
			{Node: nodes[2], Reachable: false, Mnesia: "unknown", Error: "connection refused"}},
		Islands: [][]string{nodes[:2], nodes[2:]}, Problems: []string{"erlmcp3@prod unreachable"}}
	phase := migrate.ClusterStatus{Phase: migrate.Phase2, Percent: 10, Mixed: true, Nodes: []migrate.NodeStatus{
		{Node: nodes[0], Reachable: true, Installed: true, Phase: migrate.Phase2, Percent: 10, Fallback: true, Epoch: 4, Mode: "mnesia",
			Primary: migrate.StoreRef{Kind: backends.KindDETS, Table: "erlmcp_sessions_dets"}, Secondary: migrate.StoreRef{Kind: backends.KindMnesia, Table: "erlmcp_session"}},
		{Node: nodes[1], Reachable: false, Error: "node down"}}}
	repairNone := &consistency.RepairResult{DryRun: true, Check: &consistency.Report{Processed: 5000}}
	repairPlan := &consistency.RepairResult{DryRun: true, Check: &consistency.Report{Processed: 5000}, Actions: []consistency.Action{
		{ID: "s1", Kind: consistency.KindMissingInTarget, Op: consistency.CopyToTarget, Mode: backends.IfAbsent, Why: "target lacks it"}}}
	repairDone := &consistency.RepairResult{Run: 7, Check: repairPlan.Check, Actions: repairPlan.Actions, Written: 1, Saved: 1}

	tableOf := func(v any, f func(tw *tabwriter.Writer)) func(io.Writer, cliutil.Format) error {
		return func(w io.Writer, fm cliutil.Format) error { return cliutil.Print(w, fm, v, f) }
	}
	cmdOut := func(w io.Writer) *cobra.Command {
		c := &cobra.Command{}
		c.SetOut(w)
		return c
	}
	return []goldenCase{
		{"version", func(w io.Writer, fm cliutil.Format) error {
			return printVersion(w, fm, VersionInfo{Version: "v1.2.0", Go: "go1.24.0"})
		}},
		{"phase_set_committed", func(w io.Writer, fm cliutil.Format) error { return printChangeRecord(w, fm, committed) }},
		{"phase_set_dry_run", func(w io.Writer, fm cliutil.Format) error { return printChangeRecord(w, fm, &planned) }},
		{"phase_show_mixed", func(w io.Writer, fm cliutil.Format) error { return printPhaseStatus(w, fm, phase) }},
		{"schema_create_refused", func(w io.Writer, fm cliutil.Format) error {
			a := &app{format: fm}
			return a.printSchema(cmdOut(w), schema, fmt.Errorf("%w: a Mnesia schema exists", migrate.ErrExists))
		}},
		{"tables_create", func(w io.Writer, fm cliutil.Format) error {
			a := &app{format: fm}
			return a.printSchema(cmdOut(w), tables, nil)
		}},
		{"archive_dry_run", func(w io.Writer, fm cliutil.Format) error { return printArchive(w, fm, archive, true) }},
		{"cluster_heal", func(w io.Writer, fm cliutil.Format) error { return printHeal(w, fm, nil, heal) }},
		{"cluster_status_partitioned", func(w io.Writer, fm cliutil.Format) error { return printStatus(w, fm, status) }},
		{"repair_nothing", tableOf(repairNone, func(tw *tabwriter.Writer) { printRepair(tw, repairNone) })},
		{"repair_plan", tableOf(repairPlan, func(tw *tabwriter.Writer) { printRepair(tw, repairPlan) })},
		{"repair_done", tableOf(repairDone, func(tw *tabwriter.Writer) { printRepair(tw, repairDone) })},
		{"sessions_list_empty", func(w io.Writer, fm cliutil.Format) error {
			var out []ListEntry // what the list of an empty store is
			return cliutil.Print(w, fm, out, func(tw *tabwriter.Writer) {
				cliutil.Row(tw, "ID", "CREATED", "LAST_ACCESSED", "TIMEOUT_MS", "BYTES")
			})
		}},
	}
}

// TestGoldenPrinters prints a representative set of reports as a table
// and as JSON and compares them with testdata/NAME.{table,json}.golden.
// The JSON must also decode, and no table may show Go's own renderings
// (true/false, [a b], <nil>).
func TestGoldenPrinters(t *testing.T) {
	for _, c := range goldenCases() {
		for _, fm := range []cliutil.Format{cliutil.Table, cliutil.JSON} {
			t.Run(c.name+"/"+string(fm), func(t *testing.T) {
				var buf bytes.Buffer
				require.NoError(t, c.print(&buf, fm))
				got := buf.String()
				if fm == cliutil.JSON {
					require.True(t, json.Valid(buf.Bytes()), got)
					require.NotEqual(t, "null\n", got, "an empty list is [], not null")
				} else {
					for _, bad := range []string{"true", "false", "<nil>", "map["} {
						require.NotContains(t, got, bad, "tables say yes/no and print lists as a, b")
					}
					for _, l := range strings.Split(got, "\n") {
						require.False(t, strings.Contains(l, "[") && strings.Contains(l, "@prod ") && strings.Contains(l, "]"), "a Go slice in %q", l)
					}
				}
				path := filepath.Join("testdata", c.name+"."+string(fm)+".golden")
				if *update {
					require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
					return
				}
				want, err := os.ReadFile(path)
				if errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s missing: run go test ./cmd/migctl -run Golden -update and review it", path)
				}
				require.NoError(t, err)
				require.Equal(t, string(want), got, "%s differs (go test ./cmd/migctl -run Golden -update to accept)", path)
			})
		}
	}
}

// TestCutKeepsCharacters: the journal's DATA column is cut at a character
// boundary, never inside a multi-byte one.
func TestCutKeepsCharacters(t *testing.T) {
	s := strings.Repeat("é", 100) // 2 bytes each
	for n := 1; n < 12; n++ {
		c := cut(s, n)
		require.True(t, utf8.ValidString(c), "cut(%d) = %q", n, c)
		require.LessOrEqual(t, len(strings.TrimSuffix(c, "...")), n)
	}
	require.Equal(t, "short", cut("short", 10))
}
