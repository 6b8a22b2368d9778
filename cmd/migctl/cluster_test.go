package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
	"github.com/erlmcp/migctl/testkit"
)

func TestClusterCommands(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 1500, 5)
	env := nodeEnv(t, cl)

	r := run(t, env, "cluster", "status", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	var st cluster.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Equal(t, cluster.Healthy, st.Verdict)
	for _, v := range st.Nodes {
		// The fixture runs the migctl_node library, as a release would.
		require.NotNil(t, v.Recorder, v.Node)
		require.True(t, v.Recorder.Running, v.Node)
		require.Greater(t, v.Recorder.Since["erlmcp_session"], int64(0), v.Node)
	}
	r = run(t, env, "cluster", "status")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "RECORDER")
	require.Regexp(t, `\d+ keys, erlmcp_session since `, r.stdout)

	r = run(t, env, "cluster", "verify-replication")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "Table size: 1500")
	require.Contains(t, r.stdout, "All nodes consistent")
	for _, rc := range []string{"0", "3"} {
		r = run(t, env, "cluster", "verify-replication", "--rechecks", rc, "--recheck-delay", "100ms")
		require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "All nodes consistent")
	}

	// Split 2|1 and write on the lone node.
	cl.Partition([]int{0, 1}, []int{2})
	cl.Eval(2, `{atomic, ok} = mnesia:transaction(fun() -> mnesia:write({erlmcp_session, <<"split-write">>,
	    #{id => <<"split-write">>, created_at => erlang:system_time(millisecond),
	      last_accessed => erlang:system_time(millisecond), timeout_ms => infinity, metadata => #{}},
	    erlang:system_time(millisecond)}) end), ok`, nil)
	r = run(t, env, "cluster", "status")
	require.Equal(t, cliutil.ExitPartitioned, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "PARTITIONED")

	r = run(t, env, "cluster", "heal", "--plan", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	var p cluster.Plan
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &p))
	require.ElementsMatch(t, cl.Names()[:2], p.WinnerNodes())
	require.Len(t, p.Tables[0].Losers[0].Decisions, 1)
	require.Equal(t, "split-write", p.Tables[0].Losers[0].Decisions[0].ID)
	require.Equal(t, int64(12000), p.KeepWindowMillis, "auto: net_ticktime 8 s × 1.25 + 2 s")
	r = run(t, env, "cluster", "heal", "--plan", "--keep-window", "90s")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Regexp(t, `keep window\s+1m30s\s+given by the operator`, r.stdout)
	r = run(t, env, "cluster", "heal", "--plan", "--keep-window", "soon")
	require.Equal(t, cliutil.ExitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "--keep-window")

	// No terminal and no --yes: refused, nothing changed.
	r = run(t, env, "cluster", "heal", "--execute")
	require.Equal(t, cliutil.ExitRefused, r.code, r.stderr)
	r = run(t, env, "cluster", "heal", "--execute", "--dry-run")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "reload-losers")
	r = run(t, env, "cluster", "status")
	require.Equal(t, cliutil.ExitPartitioned, r.code)

	// Stop half-way, list, resume (one journal for all three runs).
	jenv := append(env, "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	r = run(t, jenv, "cluster", "heal", "--execute", "--yes", "--stop-after", "read-changes", "-o", "json")
	require.Equal(t, cliutil.ExitFailure, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stderr, "stopped on request")
	r = run(t, jenv, "cluster", "restore-backup", "--list", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	var hs []cluster.HealRecord
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &hs))
	require.Len(t, hs, 1)
	require.False(t, hs[0].Completed)
	require.Len(t, hs[0].Backups, 1)
	r = run(t, jenv, "cluster", "heal", "--resume", hs[0].ID, "--yes", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stdout+r.stderr)
	var rep cluster.HealReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.True(t, rep.Healed)
	require.Len(t, rep.Backups, 2, "the loser's table, then the winner's rows the merge touched")
	require.Equal(t, 1, rep.Merged[0].Written)

	// The loser's backup restores (dry run first).
	r = run(t, jenv, "cluster", "restore-backup", hs[0].Backups[0].File, "--dry-run")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "nothing written")
	r = run(t, jenv, "cluster", "restore-backup", hs[0].Backups[0].File, "--yes", "--mode", "if_absent", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	var rr cluster.RestoreResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rr))
	require.EqualValues(t, 1501, rr.Count)

	r = run(t, env, "cluster", "status")
	require.Equal(t, cliutil.ExitOK, r.code, r.stdout)
	for i := range cl.Nodes {
		got := cl.Eval(i, `length(mnesia:dirty_read(erlmcp_session, <<"split-write">>))`, nil)
		require.EqualValues(t, 1, got)
	}

	// A node down: degraded.
	cl.Nodes[2].Kill()
	r = run(t, env, "cluster", "status")
	require.Equal(t, cliutil.ExitDegraded, r.code, r.stdout)
	r = run(t, env, "cluster", "heal", "--plan")
	require.Equal(t, cliutil.ExitRefused, r.code, r.stdout)
}

func TestClusterWatchCLI(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	cmd := migctl(t, nodeEnv(t, cl), "cluster", "watch", "-o", "json", "--interval", "300ms", "--metrics-addr", addr)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<22)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitVerdict := func(v cluster.Verdict) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case s, ok := <-lines:
				require.True(t, ok, "watch ended: %s", stderr.String())
				var m struct {
					Report *cluster.WatchReport `json:"report"`
				}
				require.NoError(t, json.Unmarshal([]byte(s), &m), s)
				if m.Report != nil && m.Report.Status.Verdict == v {
					return
				}
			case <-deadline:
				t.Fatalf("no %s report; stderr: %s", v, stderr.String())
			}
		}
	}
	waitVerdict(cluster.Healthy)
	cl.Partition([]int{0, 1}, []int{2})
	waitVerdict(cluster.Partitioned)
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "migctl_mnesia_partitioned 1\n")
	require.Contains(t, string(body), "migctl_mnesia_islands 2\n")

	// Interrupted, it stops its forwarders and exits 0.
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.NoError(t, cmd.Wait(), stderr.String())
	// ... quietly: the agent is unloaded, nothing fails on the way out.
	require.NotContains(t, stderr.String(), "closing connections", stderr.String())
	require.NotContains(t, stderr.String(), "level=WARN", stderr.String())
	for i := range cl.Nodes {
		n := cl.Eval(i, `length([P || P <- processes(), {current_function, {migctl_cluster, _, _}} <- [erlang:process_info(P, current_function)]])`, nil)
		require.EqualValues(t, 0, n)
	}
}

func TestClusterResyncCLI(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 500, 5)
	env := append(nodeEnv(t, cl), "MIGCTL_JOURNAL="+filepath.Join(t.TempDir(), "journal.db"))
	odd := cl.Nodes[2].Name
	// One row changed in node 2's copy only, behind Mnesia's back.
	cl.Eval(2, `[K | _] = lists:sort(mnesia:dirty_all_keys(erlmcp_session)),
	    [{T, K, S, W}] = ets:lookup(erlmcp_session, K),
	    ets:insert(erlmcp_session, {T, K, S#{metadata => #{<<"odd">> => 1}}, W}), ok`, nil)
	r := run(t, env, "cluster", "verify-replication")
	require.Equal(t, cliutil.ExitDifferences, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "INCONSISTENT: "+odd)

	r = run(t, env, "cluster", "resync", "nobody@127.0.0.1")
	require.Equal(t, cliutil.ExitUsage, r.code, r.stderr)
	r = run(t, env, "cluster", "resync", odd)
	require.Equal(t, cliutil.ExitRefused, r.code, "no terminal, no --yes: %s", r.stderr)
	r = run(t, env, "cluster", "resync", odd, "--dry-run")
	require.Equal(t, cliutil.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "master nodes")
	r = run(t, env, "cluster", "verify-replication")
	require.Equal(t, cliutil.ExitDifferences, r.code, "the dry run changed nothing")

	r = run(t, env, "cluster", "resync", odd, "--yes", "--reason", "INC-7 odd replica", "-o", "json")
	require.Equal(t, cliutil.ExitOK, r.code, r.stdout+r.stderr)
	var rep cluster.MembershipReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Len(t, rep.Backups, 1)
	require.FileExists(t, rep.Backups[0].File)
	require.True(t, rep.Verify[0].Consistent)
	r = run(t, env, "cluster", "verify-replication")
	require.Equal(t, cliutil.ExitOK, r.code, r.stdout)
}
