package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/testkit"
)

// TestConsistencyCLI drives check, repair, undo-repair and history through
// the real binary and decodes -o json into the library's types.
func TestConsistencyCLI(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_dets"})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 2000, 7)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(2000)}, r)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `{atomic, ok} = mnesia:transaction(fun() ->
		[mnesia:write({erlmcp_session, I, S, 0}) || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')], ok end), ok`, nil))
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	check := func(extra ...string) (*consistency.Report, int) {
		args := append([]string{"consistency", "check", "--source", "dets", "--target", "mnesia", "--recheck-delay", "200ms", "-o", "json"}, extra...)
		res := run(t, env, args...)
		var rep consistency.Report
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep), "stdout %q stderr %q", res.stdout, res.stderr)
		return &rep, res.code
	}

	rep, code := check()
	require.Equal(t, cliutil.ExitOK, code)
	require.EqualValues(t, 2000, rep.Processed)
	require.Equal(t, "full", rep.Mode)

	// Damage the target: one changed, one deleted.
	ids := cl.Eval(0, `lists:sublist(lists:sort(dets:select(erlmcp_sessions_dets, [{{'$1', '_'}, [], ['$1']}])), 2)`, nil).(erl.List)
	a, b := ids[0].([]byte), ids[1].([]byte)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `[{T, I, S, L}] = mnesia:dirty_read(erlmcp_session, A),
		mnesia:dirty_write({T, I, S#{timeout_ms => infinity}, L}), mnesia:dirty_delete(erlmcp_session, B), ok`,
		map[string]erl.Term{"A": a, "B": b}))
	rep, code = check()
	require.Equal(t, cliutil.ExitDifferences, code)
	require.EqualValues(t, 1, rep.Mismatched)
	require.EqualValues(t, 1, rep.MissingInTarget)
	require.Equal(t, string(a), rep.Samples[consistency.KindMismatched][0].ID)
	rep, code = check("--sample", "5000")
	require.Equal(t, cliutil.ExitDifferences, code)
	require.Equal(t, "sample", rep.Mode)

	// repair --dry-run changes nothing; without --yes and a terminal it refuses.
	res := run(t, env, "consistency", "repair", "--source", "dets", "--target", "mnesia", "--recheck-delay", "200ms", "--dry-run", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var plan consistency.RepairResult
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &plan))
	require.True(t, plan.DryRun)
	require.Len(t, plan.Actions, 2)
	res = run(t, env, "consistency", "repair", "--source", "dets", "--target", "mnesia", "--recheck-delay", "200ms")
	require.Equal(t, cliutil.ExitRefused, res.code, res.stderr)
	_, code = check()
	require.Equal(t, cliutil.ExitDifferences, code)

	res = run(t, env, "consistency", "repair", "--source", "dets", "--target", "mnesia", "--recheck-delay", "200ms", "--yes", "--reason", "e2e", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var done consistency.RepairResult
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &done))
	require.Equal(t, 2, done.Written)
	_, code = check()
	require.Equal(t, cliutil.ExitOK, code)

	res = run(t, env, "consistency", "undo-repair", strconv.FormatUint(done.Run, 10), "--yes", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	_, code = check()
	require.Equal(t, cliutil.ExitDifferences, code)

	res = run(t, env, "consistency", "history", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var h []consistency.HistoryEntry
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &h))
	kinds := map[string]int{}
	for _, e := range h {
		kinds[e.Kind]++
	}
	require.Equal(t, map[string]int{consistency.EntryCheck: 6, consistency.EntryRepair: 1, consistency.EntryUndo: 1}, kinds)

	// Could not check: a node that does not exist gives 3.
	res = run(t, []string{"MIGCTL_COOKIE_FILE=" + testkit.CookieFile(t)}, "consistency", "check", "--source", "dets", "--target", "mnesia",
		"--nodes", "nosuchnode@127.0.0.1")
	require.Equal(t, cliutil.ExitUnreachable, res.code, res.stderr)
	res = run(t, env, "consistency", "check", "--source", "dets")
	require.Equal(t, cliutil.ExitUsage, res.code, res.stderr)
}

// TestConsistencyMonitorCLI runs the monitor binary: it serves /metrics,
// stops on SIGTERM within seconds, and a restart continues its duration.
// Stopped by SIGTERM it exits 0 even after it saw mismatches (systemctl
// stop must not leave the unit failed); the mismatches stay in the history.
func TestConsistencyMonitorCLI(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_dets"})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 500, 7)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(500)}, r)
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `{atomic, ok} = mnesia:transaction(fun() ->
		[mnesia:write({erlmcp_session, I, S, 0}) || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')], ok end), ok`, nil))
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()

	cmd := migctl(t, env, "consistency", "monitor", "--source", "dets", "--target", "mnesia",
		"--interval", "300ms", "--full", "--duration", "1d", "--metrics-addr", addr, "--log-level", "info", "--watch-cluster")
	var se bytes.Buffer
	cmd.Stderr = &se
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `migctl_consistency_checks_total{result="clean"`) &&
			!strings.Contains(string(b), `migctl_consistency_checks_total{result="clean",source="dets:erlmcp_sessions_dets@`+cl.Nodes[0].Name+`",target="mnesia:erlmcp_session@`+cl.Nodes[0].Name+`"} 0`)
	}, 30*time.Second, 200*time.Millisecond, "no clean check on /metrics; stderr:\n%s", se.String())
	// --watch-cluster: the Mnesia cluster's series on the same /metrics.
	var body []byte
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return strings.Contains(string(body), "migctl_mnesia_")
	}, 10*time.Second, 100*time.Millisecond, "no migctl_mnesia_ series; stderr:\n%s", se.String())
	require.Contains(t, string(body), "\nmigctl_mnesia_partitioned 0\n")
	require.Contains(t, string(body), "\nmigctl_mnesia_islands 1\n")
	require.Contains(t, string(body), `migctl_mnesia_running{node="`+cl.Nodes[0].Name+`"} 1`)

	t0 := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, se.String())
	case <-time.After(5 * time.Second):
		t.Fatalf("monitor did not stop within 5 s of SIGTERM:\n%s", se.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(t0))

	res := run(t, env, "consistency", "history", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var h []consistency.HistoryEntry
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &h))
	require.NotEmpty(t, h)
	require.Equal(t, "monitor:dets:erlmcp_sessions_dets@"+cl.Nodes[0].Name+"→mnesia:erlmcp_session@"+cl.Nodes[0].Name, h[0].Origin)

	// Mismatches, then SIGTERM: exit 0, the mismatches in the history. The
	// deprecated --listen still works (same flag).
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `{atomic, ok} = mnesia:transaction(fun() ->
		[mnesia:delete({erlmcp_session, K}) || K <- lists:sublist(mnesia:all_keys(erlmcp_session), 5)], ok end), ok`, nil))
	cmd = migctl(t, env, "consistency", "monitor", "--source", "dets", "--target", "mnesia",
		"--interval", "300ms", "--full", "--duration", "1d", "--listen", addr)
	se.Reset()
	cmd.Stderr = &se
	require.NoError(t, cmd.Start())
	done2 := make(chan error, 1)
	go func() { done2 <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done2:
		case <-time.After(5 * time.Second):
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `migctl_consistency_mismatches_total{kind="missing_in_target"`) && !strings.HasSuffix(l, " 0") {
				return true
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond, "no mismatch on /metrics; stderr:\n%s", se.String())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done2:
		require.NoError(t, err, "a monitor stopped by SIGTERM exits 0 whatever it saw:\n%s", se.String())
	case <-time.After(5 * time.Second):
		t.Fatalf("monitor did not stop within 5 s of SIGTERM:\n%s", se.String())
	}
	require.Contains(t, se.String(), "--listen is deprecated: use --metrics-addr")
	// Shown at the default level (warn): how it ended.
	require.Contains(t, se.String(), `msg="monitor stopped" by_signal=true`)
	res = run(t, env, "consistency", "history", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &h))
	seen := false
	for _, e := range h {
		seen = seen || (e.Check != nil && e.Check.MissingInTarget > 0)
	}
	require.True(t, seen, "the history keeps the mismatches: %s", res.stdout)
}
