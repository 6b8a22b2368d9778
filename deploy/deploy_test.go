// Package deploy_test checks the deploy files with the tools that load them:
// promtool (check rules, test rules), systemd-analyze (verify, security),
// and the Grafana dashboard's JSON, variables and queries. A check whose
// tool is absent is skipped with the reason (promtool: Debian package
// prometheus, which `make deps` installs; systemd-analyze: package systemd).
package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// maxExposure is the highest `systemd-analyze security` score a unit may
// have (issue 11; 6.8 before the hardening).
const maxExposure = 2.5

func tool(t *testing.T, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (%s): skipped", name, why)
	}
	return p
}

func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out)
	return string(out)
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	require.NoError(t, err)
	require.NotEmpty(t, files, pattern)
	return files
}

// ruleFiles are the alerting rule files (not their tests).
func ruleFiles(t *testing.T) []string {
	var out []string
	for _, f := range glob(t, "prometheus/*.yml") {
		if !strings.HasSuffix(f, "_test.yml") {
			out = append(out, f)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := tool(t, "promtool", "Debian package prometheus; `make deps` installs it")
	for _, f := range ruleFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Log(run(t, ".", promtool, "check", "rules", f))
		})
	}
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := tool(t, "promtool", "Debian package prometheus; `make deps` installs it")
	for _, f := range glob(t, "prometheus/*_test.yml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			// rule_files are relative to the test file
			t.Log(run(t, filepath.Dir(f), promtool, "test", "rules", filepath.Base(f)))
		})
	}
}

// Every alert of every rules file is tested both ways: at least one
// evaluation where it fires and one where it does not.
func TestEveryAlertHasUnitTests(t *testing.T) {
	var alerts []string
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		require.NoError(t, yaml.Unmarshal(b, &rf), f)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					alerts = append(alerts, r.Alert)
				}
			}
		}
	}
	require.NotEmpty(t, alerts)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range glob(t, "prometheus/*_test.yml") {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var tf struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		require.NoError(t, yaml.Unmarshal(b, &tf), f)
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, a := range alerts {
		require.True(t, fires[a], "no promtool test makes %s fire (deploy/prometheus/*_test.yml)", a)
		require.True(t, quiet[a], "no promtool test checks that %s stays quiet (deploy/prometheus/*_test.yml)", a)
	}
}

// units returns each unit file's text with ExecStart's binary replaced by
// one that exists: `systemd-analyze verify` fails on a missing or
// non-executable ExecStart binary, and /usr/local/bin/migctl is where the
// unit is installed, not where the tests run. /bin/true stands in for it
// (the arguments are migctl's and are not checked by systemd).
func units(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, f := range glob(t, "systemd/*.service") {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		s := string(b)
		require.Contains(t, s, "ExecStart=/usr/local/bin/migctl ", f)
		out[filepath.Base(f)] = strings.ReplaceAll(s, "ExecStart=/usr/local/bin/migctl ", "ExecStart=/bin/true ")
	}
	return out
}

func TestSystemdVerify(t *testing.T) {
	sa := tool(t, "systemd-analyze", "Debian package systemd")
	_, err := os.Stat("/bin/true")
	require.NoError(t, err)
	dir := t.TempDir()
	for name, text := range units(t) {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		out := run(t, dir, sa, "verify", p)
		// verify also reports on other units it loads (the system's);
		// anything about ours is a failure.
		for _, l := range strings.Split(out, "\n") {
			require.NotContains(t, l, name, "systemd-analyze verify %s:\n%s", name, out)
		}
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestSystemdSecurity measures `systemd-analyze security --offline` (no
// need for systemd as PID 1 or an installed unit; systemd >= 250).
func TestSystemdSecurity(t *testing.T) {
	sa := tool(t, "systemd-analyze", "Debian package systemd")
	if out, err := exec.Command(sa, "security", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--offline") {
		t.Skipf("systemd-analyze security has no --offline (systemd < 250): skipped")
	}
	dir := t.TempDir()
	for name, text := range units(t) {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		cmd := exec.Command(sa, "security", "--offline=yes", "--no-pager", p)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput() // exits non-zero above its --threshold, which we judge ourselves
		m := exposure.FindStringSubmatch(string(out))
		require.NotNil(t, m, "systemd-analyze security %s:\n%s", name, out)
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		t.Logf("%s: exposure %.1f", name, v)
		require.LessOrEqual(t, v, maxExposure, "systemd-analyze security %s:\n%s", name, out)
	}
}

// The monitor's end states are not restarted: after --duration it exits 0,
// or 4 if it saw mismatches, and would exit again at once on every restart.
func TestSystemdEndStates(t *testing.T) {
	u := units(t)
	restartPrevent := func(text string) []string {
		var codes []string
		for _, l := range strings.Split(text, "\n") {
			if v, ok := strings.CutPrefix(l, "RestartPreventExitStatus="); ok {
				codes = append(codes, strings.Fields(v)...)
			}
		}
		return codes
	}
	mon, ok := u["migctl-monitor.service"]
	require.True(t, ok)
	require.Contains(t, mon, "ExecStart=/bin/true consistency monitor ")
	require.Contains(t, mon, "\nRestart=on-failure\n")
	require.Contains(t, restartPrevent(mon), "4")
	w, ok := u["migctl-cluster-watch.service"]
	require.True(t, ok, "a unit for migctl cluster watch")
	require.Contains(t, w, "ExecStart=/bin/true cluster watch ")
	require.Contains(t, w, "--metrics-addr 127.0.0.1:9465")
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // inside rows
}

func loadDashboard(t *testing.T, f string) dashboard {
	t.Helper()
	b, err := os.ReadFile(f)
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d), f)
	require.NotEmpty(t, d.Title, f)
	require.NotEmpty(t, d.Panels, f)
	return d
}

// query is one PromQL expression of the dashboard and where it is.
type query struct{ where, expr string }

func (d dashboard) queries() []query {
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %d %q %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, query{fmt.Sprintf("annotation %q", a.Name), a.Expr})
		}
	}
	return out
}

// Grafana's variable syntaxes: $name, ${name}, ${name:format},
// ${name.field}, [[name]]. A $ followed by a digit is a label_replace
// group reference ("$1"), which Grafana leaves alone (no variable is named
// with a digit first).
var varRef = regexp.MustCompile(`\$\{([A-Za-z_]\w*)[^}]*\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]`)

// Grafana's own variables a query may use.
var builtins = []string{"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
	"__from", "__to", "__dashboard", "__name", "__org", "__user", "timeFilter", "__timeFilter"}

// The dashboard parses, and its queries reference only variables it
// defines; each one selects by $source and $target (panels 11-16 did not).
func TestDashboardVariables(t *testing.T) {
	for _, f := range glob(t, "grafana/*.json") {
		d := loadDashboard(t, f)
		defined := map[string]bool{}
		for _, v := range d.Templating.List {
			defined[v.Name] = true
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			require.False(t, ids[p.ID], "%s: panel id %d twice", f, p.ID)
			ids[p.ID] = true
		}
		qs := d.queries()
		require.NotEmpty(t, qs, f)
		for _, q := range qs {
			require.NotEmpty(t, strings.TrimSpace(q.expr), "%s: %s: empty query", f, q.where)
			used := map[string]bool{}
			for _, m := range varRef.FindAllStringSubmatch(q.expr, -1) {
				name := m[1] + m[2] + m[3]
				used[name] = true
				require.True(t, defined[name] || slices.Contains(builtins, name),
					"%s: %s uses $%s, which the dashboard does not define (defined: %v)", f, q.where, name, keys(defined))
			}
			if defined["source"] && defined["target"] {
				require.True(t, used["source"] && used["target"], "%s: %s ignores $source/$target: %s", f, q.where, q.expr)
			}
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDashboardQueries evaluates the dashboard's queries with promtool on
// series shaped as migctl exports them, with $source/$target selecting one
// of two monitors (A; B compares other stores) and two cluster watches (wA
// watches A's Mnesia nodes, wB another cluster): only A's and wA's series
// may show. It also checks the progress stat (0..1, "no end" as -1) and
// the annotations.
func TestDashboardQueries(t *testing.T) {
	promtool := tool(t, "promtool", "Debian package prometheus; `make deps` installs it")
	d := loadDashboard(t, "grafana/migctl-dashboard.json")
	const (
		srcA = "dets:erlmcp_sessions_dets@n1@h,n2@h"
		tgtA = "mnesia:erlmcp_session@n1@h"
		srcB = "ets:erlmcp_sessions@x1@h"
		tgtB = "dets:erlmcp_sessions_dets@x1@h"
		monA = `job="migctl-consistency",instance="a:9464"`
		monB = `job="migctl-consistency",instance="b:9464"`
		wA   = `job="migctl-cluster",instance="wa:9465"`
		wB   = `job="migctl-cluster",instance="wb:9465"`
	)
	stA := fmt.Sprintf(`source=%q,target=%q`, srcA, tgtA)
	stB := fmt.Sprintf(`source=%q,target=%q`, srcB, tgtB)
	// One sample a minute, t = 0..30 m.
	series := [][2]string{
		{`migctl_consistency_checks_total{` + monA + `,` + stA + `,result="clean"}`, "0+1x30"},
		{`migctl_consistency_checks_total{` + monB + `,` + stB + `,result="clean"}`, "0+1x30"},
		// A: started at 60 s, ends at 1260 s; B: --duration 0
		{`migctl_consistency_monitor_start_timestamp_seconds{` + monA + `,` + stA + `}`, "60x30"},
		{`migctl_consistency_monitor_end_timestamp_seconds{` + monA + `,` + stA + `}`, "1260x30"},
		{`migctl_consistency_monitor_start_timestamp_seconds{` + monB + `,` + stB + `}`, "60x30"},
		{`migctl_consistency_monitor_end_timestamp_seconds{` + monB + `,` + stB + `}`, "0x30"},
		// n1 moves from phase0 to phase1 at 11 m (the gauge is reset: the old
		// series goes stale)
		{`migctl_node_migration_phase{` + monA + `,node="n1@h",phase="phase0"}`, "1x10 stale"},
		{`migctl_node_migration_phase{` + monA + `,node="n1@h",phase="phase1"}`, "_x11 1x19"},
		{`migctl_node_migration_phase{` + monB + `,node="x1@h",phase="phase0"}`, "1x30"},
		{`migctl_hybrid_events{` + monA + `,node="n1@h",event="read_errors"}`, "0+60x30"},
		{`migctl_hybrid_events{` + monA + `,node="n1@h",event="fallbacks"}`, "0+60x30"},
		{`migctl_hybrid_events{` + monA + `,node="n1@h",event="secondary_write_failures"}`, "0+60x30"},
		{`migctl_hybrid_events{` + monB + `,node="x1@h",event="read_errors"}`, "0+600x30"},
		{`migctl_hybrid_events{` + monB + `,node="x1@h",event="fallbacks"}`, "0+600x30"},
		{`migctl_hybrid_events{` + monB + `,node="x1@h",event="secondary_write_failures"}`, "0+600x30"},
		// wA: split from 10 m to 15 m, healed
		{`migctl_mnesia_partitioned{` + wA + `}`, "0x10 1x5 0x15"},
		{`migctl_mnesia_islands{` + wA + `}`, "1x10 2x5 1x15"},
		{`migctl_mnesia_node_reachable{` + wA + `,node="n1@h"}`, "1x30"},
		{`migctl_mnesia_node_reachable{` + wA + `,node="n2@h"}`, "1x30"},
		{`migctl_mnesia_partitioned{` + wB + `}`, "1x30"},
		{`migctl_mnesia_islands{` + wB + `}`, "3x30"},
		{`migctl_mnesia_node_reachable{` + wB + `,node="other@h"}`, "1x30"},
		{`migctl_backfill_progress_ratio{` + monA + `,direction="forward"}`, "0.5x30"},
		{`migctl_backfill_progress_ratio{` + monB + `,direction="forward"}`, "0.25x30"},
		{`migctl_backfill_scanned_sessions_total{` + monA + `,direction="forward",node="n1@h"}`, "0+120x30"},
		{`migctl_backfill_written_sessions_total{` + monA + `,direction="forward",node="n1@h"}`, "0+60x30"},
		{`migctl_backfill_scanned_sessions_total{` + monB + `,direction="forward",node="x1@h"}`, "0+6000x30"},
		{`migctl_backfill_written_sessions_total{` + monB + `,direction="forward",node="x1@h"}`, "0+6000x30"},
		{`migctl_backfill_state{` + monA + `,direction="forward",state="done"}`, "1x30"},
		{`migctl_backfill_state{` + monA + `,direction="forward",state="running"}`, "0x30"},
		{`migctl_backfill_state{` + monB + `,direction="forward",state="running"}`, "1x30"},
		{`migctl_backfill_state{` + monB + `,direction="forward",state="done"}`, "0x30"},
	}
	a := `instance="a:9464",job="migctl-consistency"`
	wa := `instance="wa:9465",job="migctl-cluster"`
	// Expected results by panel id and refId (or annotation name), at 12 m
	// unless given.
	type exp struct {
		at      string
		samples [][2]string // labels, value
	}
	want := map[string]exp{
		"3/A":            {"12m", [][2]string{{`{` + a + `,` + stA + `}`, "0.55"}}}, // (720-60)/(1260-60)
		"11/A":           {"12m", [][2]string{{`migctl_node_migration_phase{` + a + `,node="n1@h",phase="phase1"}`, "1"}}},
		"12/A":           {"12m", [][2]string{{`{` + a + `,event="read_errors",node="n1@h"}`, "1"}}},
		"12/B":           {"12m", [][2]string{{`{` + a + `,event="fallbacks",node="n1@h"}`, "1"}}},
		"12/C":           {"12m", [][2]string{{`{` + a + `,event="secondary_write_failures",node="n1@h"}`, "1"}}},
		"13/A":           {"12m", [][2]string{{`migctl_mnesia_partitioned{` + wa + `}`, "1"}}},
		"13/B":           {"12m", [][2]string{{`migctl_mnesia_islands{` + wa + `}`, "2"}}},
		"13/C":           {"12m", [][2]string{{`{` + wa + `}`, "2"}}},
		"14/A":           {"12m", [][2]string{{`migctl_backfill_progress_ratio{` + a + `,direction="forward"}`, "0.5"}}},
		"15/A":           {"12m", [][2]string{{`{direction="forward"}`, "2"}}},
		"15/B":           {"12m", [][2]string{{`{direction="forward"}`, "1"}}},
		"16/A":           {"12m", [][2]string{{`migctl_backfill_state{` + a + `,direction="forward",state="done"}`, "1"}}},
		"Phase changes":  {"12m", [][2]string{{`migctl_node_migration_phase{` + a + `,node="n1@h",phase="phase1"}`, "1"}}},
		"Split brain":    {"12m", [][2]string{{`migctl_mnesia_partitioned{` + wa + `}`, "1"}}},
		"Heals":          {"17m", [][2]string{{`migctl_mnesia_partitioned{` + wa + `}`, "1"}}},
		"Phase changes@": {"20m", nil}, // only around the change
		"Heals@":         {"12m", nil},
	}
	exprs := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("%d/%s", p.ID, tg.RefID)] = tg.Expr
		}
	}
	for _, an := range d.Annotations.List {
		if an.Expr != "" {
			exprs[an.Name] = an.Expr
			exprs[an.Name+"@"] = an.Expr
		}
	}
	// Grafana substitutes a single selected value as the regex-escaped
	// value.
	pick := strings.NewReplacer("$source", regexp.QuoteMeta(srcA), "$target", regexp.QuoteMeta(tgtA))
	all := strings.NewReplacer("$source", ".*", "$target", ".*")
	type sample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	type exprTest struct {
		Expr       string   `json:"expr"`
		EvalTime   string   `json:"eval_time"`
		ExpSamples []sample `json:"exp_samples"`
	}
	var tests []exprTest
	names := keys(func() map[string]bool {
		m := map[string]bool{}
		for k := range want {
			m[k] = true
		}
		return m
	}())
	for _, k := range names {
		w := want[k]
		e, ok := exprs[k]
		require.True(t, ok, "the dashboard has no query %s", k)
		et := exprTest{Expr: pick.Replace(e), EvalTime: w.at, ExpSamples: []sample{}}
		for _, s := range w.samples {
			v, err := strconv.ParseFloat(s[1], 64)
			require.NoError(t, err)
			et.ExpSamples = append(et.ExpSamples, sample{s[0], v})
		}
		tests = append(tests, et)
	}
	// All monitors: B has no end and shows -1 ("no end (--duration 0)").
	tests = append(tests, exprTest{Expr: all.Replace(exprs["3/A"]), EvalTime: "12m", ExpSamples: []sample{
		{`{` + a + `,` + stA + `}`, 0.55},
		{fmt.Sprintf(`{instance="b:9464",job="migctl-consistency",%s}`, stB), -1},
	}})
	// B alone (--duration 0: end 0): -1, never a negative ratio (it was
	// (720-60)/(0-60) = -11).
	pickB := strings.NewReplacer("$source", regexp.QuoteMeta(srcB), "$target", regexp.QuoteMeta(tgtB))
	tests = append(tests, exprTest{Expr: pickB.Replace(exprs["3/A"]), EvalTime: "12m", ExpSamples: []sample{
		{fmt.Sprintf(`{instance="b:9464",job="migctl-consistency",%s}`, stB), -1},
	}})
	// After A's end: 1, not more.
	tests = append(tests, exprTest{Expr: pick.Replace(exprs["3/A"]), EvalTime: "25m", ExpSamples: []sample{{`{` + a + `,` + stA + `}`, 1}}})

	type inputSeries struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	var in []inputSeries
	for _, s := range series {
		in = append(in, inputSeries{s[0], s[1]})
	}
	file := map[string]any{
		"rule_files":          []string{},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":         "1m",
			"input_series":     in,
			"promql_expr_test": tests,
		}},
	}
	b, err := json.MarshalIndent(file, "", "  ") // JSON is YAML
	require.NoError(t, err)
	dir := t.TempDir()
	p := filepath.Join(dir, "dashboard_test.yml")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	out, err := exec.Command(promtool, "test", "rules", p).CombinedOutput()
	require.NoError(t, err, "the dashboard's queries on series of two monitors and two cluster watches (only A's and wA's may show):\n%s", out)
}
