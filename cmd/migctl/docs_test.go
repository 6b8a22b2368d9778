package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The docs' commands must be commands migctl has. Every `migctl ...` line in
// a fenced code block of these files is checked: the real binary must accept
// it with --help appended (cobra then resolves the command path and parses
// every flag and flag value without contacting a node: an unknown command,
// an unknown flag or a malformed value exits non-zero), and the command tree
// must resolve every word up to the positional arguments, which must satisfy
// the command's Args rule (cobra's --help alone lets `migctl phase sett` and
// `migctl cluster status extra` through).
var checkedDocs = []string{"runbook.md", "split-brain.md", "README.md", "config.md"}

func docsDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "docs"))
	require.NoError(t, err)
	return d
}

// docCommand is one migctl command line found in a doc.
type docCommand struct {
	file string
	line int
	args []string // after "migctl"
	text string
}

// extractCommands returns the migctl command lines of the fenced code
// blocks of a Markdown document. In a block where some line starts with a
// "$ " prompt only those lines are commands (the rest is their output);
// otherwise every line is. A command may continue over several lines with
// a trailing backslash and hold shell around it (VAR=value prefixes, pipes,
// &&, ;, redirections, trailing comments): only the migctl words are kept.
func extractCommands(name string, r io.Reader) ([]docCommand, error) {
	type line struct {
		n    int
		text string
	}
	var blocks [][]line
	sc := bufio.NewScanner(r)
	in, n := false, 0
	for sc.Scan() {
		n++
		trim := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(trim, "```") {
			in = !in
			if in {
				blocks = append(blocks, nil)
			}
			continue
		}
		if in {
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], line{n, trim})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	envAssign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	var out []docCommand
	for _, b := range blocks {
		prompted := false
		for _, l := range b {
			if strings.HasPrefix(l.text, "$ ") {
				prompted = true
			}
		}
		for k := 0; k < len(b); k++ {
			start, text := b[k].n, b[k].text
			if prompted {
				if !strings.HasPrefix(text, "$ ") {
					continue
				}
				text = strings.TrimPrefix(text, "$ ")
			}
			for strings.HasSuffix(text, `\`) && k+1 < len(b) {
				k++
				text = strings.TrimSuffix(text, `\`) + " " + b[k].text
			}
			if !migctlWord.MatchString(text) {
				continue // output, prose, other tools
			}
			words, err := shellWords(text)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, start, err)
			}
			for _, cmd := range splitCommands(words) {
				i := 0
				for i < len(cmd) && (envAssign.MatchString(cmd[i]) || shellKeywords[cmd[i]]) {
					i++
				}
				if i >= len(cmd) || (cmd[i] != "migctl" && !strings.HasSuffix(cmd[i], "/migctl")) {
					continue
				}
				out = append(out, docCommand{file: name, line: start, args: cmd[i+1:], text: text})
			}
		}
	}
	return out, nil
}

// migctlWord finds lines that run migctl somewhere.
var migctlWord = regexp.MustCompile(`(^|[\s;|&(!])(\S*/)?migctl(\s|$)`)

// shellKeywords may stand before a command.
var shellKeywords = map[string]bool{"sudo": true, "exec": true, "time": true, "if": true, "then": true,
	"else": true, "do": true, "while": true, "until": true, "!": true, "{": true, "(": true}

// shellWords splits a line like a POSIX shell would, enough for docs:
// quotes, backslash escapes, comments; $(...) and ${...} stay single words.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	have := false
	flush := func() {
		if have {
			words = append(words, w.String())
		}
		w.Reset()
		have = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			have = true
			i += j + 1
		case c == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unclosed \" in %q", s)
			}
			w.WriteString(strings.ReplaceAll(s[i+1:j], `\"`, `"`))
			have = true
			i = j
		case c == '\\' && i+1 < len(s):
			w.WriteByte(s[i+1])
			have = true
			i++
		case c == '$' && i+1 < len(s) && (s[i+1] == '(' || s[i+1] == '{'):
			open, closing := s[i+1], byte(')')
			if open == '{' {
				closing = '}'
			}
			depth, j := 0, i+1
			for ; j < len(s); j++ {
				if s[j] == open {
					depth++
				} else if s[j] == closing {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unclosed $%c in %q", open, s)
			}
			w.WriteString(s[i : j+1])
			have = true
			i = j
		case c == '#' && !have:
			flush()
			return words, nil
		case c == ' ' || c == '\t':
			flush()
		case c == '|' || c == ';' || c == '&' || c == '>' || c == '<':
			flush()
			op := string(c)
			if i+1 < len(s) && (s[i+1] == c || (c == '>' && s[i+1] == '&')) {
				op += string(s[i+1])
				i++
			}
			words = append(words, "\x00"+op)
		default:
			w.WriteByte(c)
			have = true
		}
	}
	flush()
	return words, nil
}

// splitCommands cuts words at shell operators; the target of a redirection
// is dropped, as is a file descriptor number just before one (2>&1).
func splitCommands(words []string) [][]string {
	var out [][]string
	var cur []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "\x00") {
			cur = append(cur, w)
			continue
		}
		op := w[1:]
		if op == ">" || op == ">>" || op == "<" || op == ">&" {
			if len(cur) > 0 && regexp.MustCompile(`^[0-9]$`).MatchString(cur[len(cur)-1]) {
				cur = cur[:len(cur)-1]
			}
			i++ // the file
			continue
		}
		out = append(out, cur)
		cur = nil
	}
	return append(out, cur)
}

// checkTree resolves args in migctl's command tree: every word before the
// first flag that names no subcommand of a command that only groups others
// is an unknown command, and the positional arguments must pass Args.
func checkTree(args []string) error {
	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	root.InitDefaultCompletionCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	pos := cmd.Flags().Args()
	if cmd.HasSubCommands() && !cmd.Runnable() && len(pos) > 0 {
		return fmt.Errorf("unknown command %q for %q", pos[0], cmd.CommandPath())
	}
	if err := cmd.ValidateArgs(pos); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return nil
}

// checkCommand runs both checks on one command line.
func checkCommand(t *testing.T, c docCommand) error {
	t.Helper()
	if len(c.args) == 0 {
		return nil // "migctl" alone prints help
	}
	args := append(append([]string{}, c.args...), "--help")
	res := run(t, []string{"MIGCTL_CONFIG="}, args...)
	if res.code != 0 {
		return fmt.Errorf("exit %d: %s", res.code, strings.TrimSpace(res.stderr))
	}
	if !strings.Contains(res.stdout, "Usage:") {
		return fmt.Errorf("--help printed no usage: %q", res.stdout)
	}
	return checkTree(c.args)
}

func TestDocsCommandsParse(t *testing.T) {
	total := 0
	for _, name := range checkedDocs {
		path := filepath.Join(docsDir(t), name)
		f, err := os.Open(path)
		require.NoError(t, err)
		cmds, err := extractCommands(name, f)
		f.Close()
		require.NoError(t, err)
		require.NotEmpty(t, cmds, "%s has no migctl command in a code block", name)
		seen := map[string]bool{}
		for _, c := range cmds {
			key := strings.Join(c.args, "\x00")
			if seen[key] {
				continue
			}
			seen[key] = true
			total++
			if err := checkCommand(t, c); err != nil {
				t.Errorf("%s:%d: migctl %s\n  %v", c.file, c.line, strings.Join(c.args, " "), err)
			}
		}
	}
	t.Logf("%d distinct migctl command lines checked", total)
}

// The check above must fail on wrong commands, or it proves nothing.
func TestDocsCommandCheckRejectsWrongCommands(t *testing.T) {
	doc := "text\n```sh\n" +
		"migctl phase set phase1 --no-such-flag            # unknown flag\n" +
		"migctl phase sett phase1                          # unknown subcommand\n" +
		"migctl phasee show                                # unknown command\n" +
		"migctl phase set phase2 --percent ten             # bad value\n" +
		"migctl cluster status extra                       # positional args on NoArgs\n" +
		"MIGCTL_NODES=a@b migctl backfill --from dets \\\n  --to mnesia --rate x   # continued line, bad value\n" +
		"migctl ping | grep yes && migctl cluster heal --plann   # second command of a line\n" +
		"```\n"
	cmds, err := extractCommands("bad.md", strings.NewReader(doc))
	require.NoError(t, err)
	require.Len(t, cmds, 8)
	for _, c := range cmds {
		if strings.Join(c.args, " ") == "ping" {
			require.NoError(t, checkCommand(t, c), "a good command passes")
			continue
		}
		require.Error(t, checkCommand(t, c), "migctl %s must be refused", strings.Join(c.args, " "))
	}
	good := "```\n$ migctl phase set phase2 --percent 10 --yes --reason \"canary, 10 %\"\n" +
		"NODE  PHASE  it's output, not a command\n" +
		"$ migctl consistency monitor --source dets --target mnesia --duration 14d \\\n    --interval 5m --sample 10000 --alert-on-mismatch 2>&1 | tee monitor.log\n" +
		"$ migctl consistency undo-repair 42 --yes\n```\n"
	cmds, err = extractCommands("good.md", strings.NewReader(good))
	require.NoError(t, err)
	require.Len(t, cmds, 3)
	for _, c := range cmds {
		require.NoError(t, checkCommand(t, c), "migctl %s", strings.Join(c.args, " "))
	}
}

// `make man` and `migctl docs markdown`: one page per visible command.
func TestDocsManGeneration(t *testing.T) {
	dir := t.TempDir()
	res := run(t, []string{"MIGCTL_NODES=someone@somewhere", "SOURCE_DATE_EPOCH=1795824000"}, "docs", "man", "--dir", dir)
	require.Equal(t, 0, res.code, res.stderr)

	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	root.InitDefaultCompletionCmd()
	var want []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		want = append(want, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	sort.Strings(want)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	sort.Strings(got)
	require.Equal(t, want, got, "one man page per command, none for the hidden docs command")

	page, err := os.ReadFile(filepath.Join(dir, "migctl-phase-set.1"))
	require.NoError(t, err)
	s := string(page)
	require.Contains(t, s, `.TH "MIGCTL" "1"`)
	require.Contains(t, s, "Nov 2026", "SOURCE_DATE_EPOCH sets the date")
	require.Contains(t, s, "--max-read-error-rate")
	root1, err := os.ReadFile(filepath.Join(dir, "migctl.1"))
	require.NoError(t, err)
	require.NotContains(t, string(root1), "someone@somewhere", "the environment does not leak into the pages")
	require.Contains(t, string(root1), "~/.local/state/migctl/journal.db")

	md := t.TempDir()
	res = run(t, nil, "docs", "markdown", "--dir", md)
	require.Equal(t, 0, res.code, res.stderr)
	b, err := os.ReadFile(filepath.Join(md, "migctl_cluster_heal.md"))
	require.NoError(t, err)
	require.Contains(t, string(b), "--ssh-config")
	require.NotContains(t, string(b), "Auto generated by spf13/cobra")

	res = run(t, nil, "docs", "man")
	require.Equal(t, 2, res.code, "--dir is required: %s", res.stderr)
}

var metricRef = regexp.MustCompile(`\b(?:migctl|erlmcp)_[a-z0-9_]+`)

// documentedMetrics are the metric names docs/metrics.md documents (in
// backquotes).
func documentedMetrics(t *testing.T) (map[string]bool, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(docsDir(t), "metrics.md"))
	require.NoError(t, err)
	m := map[string]bool{}
	for _, s := range regexp.MustCompile("`((?:migctl|erlmcp)_[a-z0-9_]+)").FindAllStringSubmatch(string(b), -1) {
		m[s[1]] = true
	}
	return m, string(b)
}

// The Grafana dashboards are valid JSON with panels, and every metric their
// queries use is documented in docs/metrics.md.
func TestDocsGrafanaDashboards(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "grafana", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	documented, _ := documentedMetrics(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var dash struct {
			Title  string            `json:"title"`
			Panels []json.RawMessage `json:"panels"`
		}
		require.NoError(t, json.Unmarshal(b, &dash), f)
		require.NotEmpty(t, dash.Title, f)
		require.NotEmpty(t, dash.Panels, f)
		type panel struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			Panels []json.RawMessage `json:"panels"`
		}
		var check func(raw []json.RawMessage)
		n := 0
		check = func(raw []json.RawMessage) {
			for _, r := range raw {
				var p panel
				require.NoError(t, json.Unmarshal(r, &p), f)
				for _, tg := range p.Targets {
					refs := metricRef.FindAllString(tg.Expr, -1)
					require.NotEmpty(t, refs, "%s: panel %q: query %q uses no migctl metric", f, p.Title, tg.Expr)
					for _, m := range refs {
						n++
						require.True(t, documented[m], "%s: panel %q uses %s, which docs/metrics.md does not document", f, p.Title, m)
					}
				}
				check(p.Panels)
			}
		}
		check(dash.Panels)
		require.Positive(t, n, "%s: no panel queries a metric", f)
	}
}

// Every alert of deploy/prometheus is documented with its metrics.
func TestDocsAlertRules(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "prometheus", "*.yml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	documented, text := documentedMetrics(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		require.NoError(t, yaml.Unmarshal(b, &rf), f)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				require.Contains(t, text, "`"+r.Alert+"`", "%s: alert %s is not in docs/metrics.md", f, r.Alert)
				for _, m := range metricRef.FindAllString(r.Expr, -1) {
					require.True(t, documented[m], "%s: alert %s uses %s, which docs/metrics.md does not document", f, r.Alert, m)
				}
			}
		}
	}
}
