package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/testkit"
)

// These tests run the real binary against real nodes, decode its -o json
// output into the library's own types, and check its exit codes.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "migctl-e2e-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "migctl")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := testkit.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// migctl is the migctl binary with a clean environment (its own HOME and
// journal, the test's EPMD) plus env, which wins over those: the cookie
// only through --cookie-file or the environment given, never argv.
func migctl(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append([]string{
		"HOME=" + t.TempDir(),
		"PATH=" + os.Getenv("PATH"),
		"MIGCTL_JOURNAL=" + filepath.Join(t.TempDir(), "journal.db"),
		"ERL_EPMD_PORT=" + strconv.Itoa(testkit.EPMDPort(t)),
	}, env...)
	return cmd
}

// run executes migctl (see migctl) and waits for it.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := migctl(t, env, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Stdin = nil // not a terminal
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{so.String(), se.String(), code}
}

func nodeEnv(t *testing.T, cl *testkit.Cluster) []string {
	return []string{
		"MIGCTL_NODES=" + strings.Join(cl.Names(), ","),
		"MIGCTL_COOKIE_FILE=" + testkit.CookieFile(t),
	}
}

func TestPingAndCount(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_dets"})
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 1500, 3)
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 700, 4)

	r := run(t, nodeEnv(t, cl), "ping", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var pings []backends.PingResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &pings))
	require.Len(t, pings, 3)
	for i, p := range pings {
		require.Equal(t, cl.Nodes[i].Name, p.Node)
		require.True(t, p.Reachable, p.Error)
		require.True(t, p.MnesiaRunning)
		require.Equal(t, "25", p.OTPRelease)
		byKind := map[backends.Kind]backends.Info{}
		for _, s := range p.Stores {
			byKind[s.Spec.Kind] = s
		}
		require.True(t, byKind[backends.KindDETS].Exists)
		if i == 0 { // only the first node's DETS store was seeded
			require.EqualValues(t, 1500, byKind[backends.KindDETS].Size)
		} else {
			require.EqualValues(t, 0, byKind[backends.KindDETS].Size)
		}
		require.True(t, byKind[backends.KindMnesia].Exists)
		require.EqualValues(t, 700, byKind[backends.KindMnesia].Size)
	}

	r = run(t, nodeEnv(t, cl), "sessions", "count", "--store", "mnesia", "--node", cl.Nodes[2].Name, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var c CountResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &c))
	require.Equal(t, CountResult{Store: "mnesia", Table: "erlmcp_session", Node: cl.Nodes[2].Name, Count: 700}, c)

	// The agent is gone from every node afterwards.
	for i := range cl.Nodes {
		require.Equal(t, false, cl.Call(i, "code", "is_loaded", erl.Atom("migctl_agent")))
	}
}

func TestExportImportByteIdentical(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_dets"})
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 3000, 5)
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	file := filepath.Join(t.TempDir(), "s.mexp")

	r := run(t, env, "sessions", "export", "--store", "dets", "--out", file, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var ex ExportResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ex))
	require.EqualValues(t, 3000, ex.Count)

	// Without a terminal and without --yes, import refuses and changes nothing.
	r = run(t, env, "sessions", "import", "--store", "mnesia", "--in", file)
	require.Equal(t, cliutil.ExitRefused, r.code, r.stderr)
	require.Contains(t, r.stderr, "--yes")
	require.EqualValues(t, 0, cl.Call(0, "mnesia", "table_info", erl.Atom("erlmcp_session"), erl.Atom("size")))

	// Dry run: the plan, nothing written.
	r = run(t, env, "sessions", "import", "--store", "mnesia", "--in", file, "--dry-run", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.EqualValues(t, 0, cl.Call(0, "mnesia", "table_info", erl.Atom("erlmcp_session"), erl.Atom("size")))

	nodeNow := func() int64 { return erl.Int64(cl.Eval(0, `erlang:system_time(millisecond)`, nil)) }
	before := nodeNow()
	r = run(t, env, "sessions", "import", "--store", "mnesia", "--in", file, "--yes", "--reason", "restore drill", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	after := nodeNow()
	var im ImportResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &im))
	require.EqualValues(t, 3000, im.Written)
	require.Equal(t, "if_newer", im.Mode, "the safe mode by default")

	// The import is journaled: who, why, the file's checksum, the result.
	r = run(t, env, "journal", "--kind", "import", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var es []journal.Entry
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &es))
	require.Len(t, es, 1)
	require.Equal(t, "restore drill", es[0].Reason)
	var rec ImportResult
	require.NoError(t, es[0].Decode(&rec))
	require.Equal(t, "done", rec.State)
	require.EqualValues(t, 3000, rec.Written)
	require.Equal(t, ex.SHA256, rec.SHA256)

	// Every session in Mnesia is byte-identical (term_to_binary) to DETS.
	same := cl.Eval(0, `dets:foldl(fun({Id, S}, Acc) ->
	        case mnesia:dirty_read(erlmcp_session, Id) of
	            [{erlmcp_session, Id, S2, _}] when S2 =:= S -> Acc + 1;
	            _ -> Acc
	        end end, 0, erlmcp_sessions_dets)`, nil)
	require.EqualValues(t, 3000, same)
	// Every imported row carries the write time in the record's last
	// field, as erlmcp's store/3 writes it, not the session's
	// last_accessed (older: the sessions were seeded before the export).
	wrong := cl.Eval(0, `length([I || {_, I, #{last_accessed := LA}, W} <- mnesia:dirty_match_object(erlmcp_session, {erlmcp_session, '_', '_', '_'}),
	        W < B orelse W > A orelse W =:= LA])`, map[string]erl.Term{"B": before, "A": after})
	require.EqualValues(t, 0, wrong, "imported rows whose last field is not the write time")

	// A damaged file is refused before anything is written.
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.mexp")
	require.NoError(t, os.WriteFile(bad, b, 0o600))
	cl.Call(0, "mnesia", "clear_table", erl.Atom("erlmcp_session"))
	r = run(t, env, "sessions", "import", "--store", "mnesia", "--in", bad, "--yes")
	require.Equal(t, cliutil.ExitUsage, r.code)
	require.Contains(t, r.stderr, "corrupt")
	require.EqualValues(t, 0, cl.Call(0, "mnesia", "table_info", erl.Atom("erlmcp_session"), erl.Atom("size")))
}

func TestBadInputAndUnreachable(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_ets"})
	env := nodeEnv(t, cl)

	r := run(t, env, "sessions", "count", "--store", "nosuch")
	require.Equal(t, cliutil.ExitUsage, r.code)
	require.Contains(t, r.stderr, "ets, dets or mnesia")

	r = run(t, env, "sessions", "count", "--store", "ets", "--node", "no_such_node@127.0.0.1")
	require.Equal(t, cliutil.ExitUnreachable, r.code)
	require.Contains(t, r.stderr, "hint")

	r = run(t, env, "sessions", "count", "--store", "ets", "--table", "erlmcp_no_table")
	require.Equal(t, cliutil.ExitFailure, r.code)
	require.Contains(t, r.stderr, "no such table")

	// Wrong cookie: told as such, and the cookie is not printed.
	wrong := filepath.Join(t.TempDir(), "cookie")
	require.NoError(t, os.WriteFile(wrong, []byte("NOT-THE-COOKIE"), 0o600))
	r = run(t, []string{"MIGCTL_NODES=" + cl.Nodes[0].Name, "MIGCTL_COOKIE_FILE=" + wrong}, "ping")
	require.Equal(t, cliutil.ExitUnreachable, r.code)
	require.Contains(t, r.stdout+r.stderr, "cookie")
	require.NotContains(t, r.stdout+r.stderr, "NOT-THE-COOKIE")
	require.NotContains(t, r.stdout+r.stderr, testkit.Cookie(t))

	// No cookie anywhere.
	r = run(t, []string{"MIGCTL_NODES=" + cl.Nodes[0].Name}, "ping")
	require.Equal(t, cliutil.ExitUsage, r.code)
	require.Contains(t, r.stderr, "cookie")

	// No nodes.
	r = run(t, nil, "ping")
	require.Equal(t, cliutil.ExitUsage, r.code)
}

// The configuration file gives nodes and names; a flag or the flag's own
// environment variable overrides it; a bad file is refused before any node
// is contacted, naming the field.
func TestConfigFile(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_ets"})
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("ets"), erl.Map{}, 321, 9)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "migctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Join([]string{
		"nodes: [" + cl.Nodes[0].Name + "]",
		"cookie_file: " + testkit.CookieFile(t),
		"epmd_port: " + strconv.Itoa(testkit.EPMDPort(t)),
		"stores: {ets_table: erlmcp_sessions_ets}",
		"monitor: {interval: 7m}",
	}, "\n")), 0o600))
	env := []string{"MIGCTL_CONFIG=" + cfg}

	r := run(t, env, "sessions", "count", "--store", "ets", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var c CountResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &c))
	require.EqualValues(t, 321, c.Count)

	r = run(t, env, "config", "check", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var eff []EffectiveSetting
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &eff))
	src := map[string]string{}
	for _, e := range eff {
		src[e.Flag] = e.Source
	}
	require.Equal(t, "config", src["nodes"])
	require.Equal(t, "config", src["cookie-file"])

	// The flag's environment variable beats the file.
	r = run(t, append(env, "MIGCTL_ETS_TABLE=no_such_table"), "sessions", "count", "--store", "ets")
	require.Equal(t, cliutil.ExitFailure, r.code)
	require.Contains(t, r.stderr, "no such table")

	// A bad file: refused, the field named, no node contacted.
	require.NoError(t, os.WriteFile(cfg, []byte("nodes: [not-a-node]\ntimeout: soon\n"), 0o600))
	r = run(t, env, "sessions", "count", "--store", "ets")
	require.Equal(t, cliutil.ExitUsage, r.code)
	require.Contains(t, r.stderr, "nodes[0]")
	require.Contains(t, r.stderr, "timeout")
}
