package testkit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/history"
)

// HistoryDirEnv names a directory that keeps every checked history (the
// nodes' blobs) and the visualizations of failed keys, one folder per test.
// Without it they go to a temporary folder that is kept only when the
// check fails (its path is in the test log).
const HistoryDirEnv = "MIGCTL_HISTORY_DIR"

// HistoryBlobs fetches the recorded history of load generator name from
// every node (erlmcp_loadgen:history/2). final, if not empty, is the store
// spec as Erlang text (`{mnesia, erlmcp_session}`) the load generator reads
// every key of its history from at the end. Stop the load generators first.
func (c *Cluster) HistoryBlobs(name, final string) map[string][]byte {
	c.t.Helper()
	out := map[string][]byte{}
	for i, n := range c.Nodes {
		r := c.Eval(i, `Opts = case Spec of
		        "" -> #{};
		        _ -> {ok, T, _} = erl_scan:string(Spec ++ "."), {ok, S} = erl_parse:parse_term(T), #{final => S}
		    end,
		    case erlmcp_loadgen:history(N, Opts) of
		        B when is_binary(B) -> {ok, B};
		        E -> {error, iolist_to_binary(io_lib:format("~0p", [E]))}
		    end`, map[string]erl.Term{"N": erl.Atom(name), "Spec": final})
		tt, ok := r.(erl.Tuple)
		if !ok || len(tt) != 2 {
			c.t.Fatalf("history of %s on %s: %v", name, n.Name, r)
		}
		b, _ := tt[1].([]byte)
		if tt[0] != erl.Atom("ok") {
			c.t.Fatalf("history of %s on %s: %s", name, n.Name, b)
		}
		out[n.Name] = b
	}
	return out
}

// CheckHistory fetches the histories of the named load generators from
// every node (see HistoryBlobs), saves them, merges them and judges the
// whole with history.Check; opts' VisualizeDir is filled in. It returns
// the verdict and the merged history; the caller asserts.
func (c *Cluster) CheckHistory(ctx context.Context, final string, opts history.Options, names ...string) (*history.Result, *history.History) {
	c.t.Helper()
	dir, keep := historyDir(c.t)
	var hs []*history.History
	for _, name := range names {
		for node, b := range c.HistoryBlobs(name, final) {
			if _, err := history.WriteFile(dir, node+"-"+name, b); err != nil {
				c.t.Fatal(err)
			}
			h, err := history.Decode(b)
			if err != nil {
				c.t.Fatalf("history %s of %s: %v", name, node, err)
			}
			hs = append(hs, h)
		}
	}
	h := history.Merge(hs...)
	opts.VisualizeDir = filepath.Join(dir, "failed")
	res, err := history.Check(ctx, h, opts)
	if err != nil {
		c.t.Fatalf("check history: %v", err)
	}
	var b bytes.Buffer
	res.Report(&b)
	if res.OK() {
		c.t.Log(b.String())
		keep(false)
	} else {
		c.t.Logf("%s\nhistories and visualizations kept in %s", b.String(), dir)
		keep(true)
	}
	return res, h
}

// historyDir is where a test's histories go, and a func that says whether
// to keep it.
func historyDir(t testing.TB) (string, func(bool)) {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if root := os.Getenv(HistoryDirEnv); root != "" {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir, func(bool) {}
	}
	dir, err := os.MkdirTemp("", "migctl-history-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	t.Cleanup(func() {
		if !kept {
			_ = os.RemoveAll(dir)
		}
	})
	return dir, func(k bool) { kept = k }
}
