package agentapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// Terms built the way ergo decodes them: atoms as erl.Atom, binaries as
// []byte, lists as erl.List (an empty one too), booleans as Go bools.

func atomL(ss ...string) erl.List {
	l := erl.List{}
	for _, s := range ss {
		l = append(l, erl.Atom(s))
	}
	return l
}

func kv(k string, v erl.Term) erl.Tuple { return erl.Tuple{erl.Atom(k), v} }

var cm = module{name: "migctl_cluster"}

// requireShape checks err is a reply-shape error naming fun.
func recorderTerm() erl.Tuple {
	return erl.Tuple{erl.Atom("ok"), true,
		erl.List{erl.Tuple{erl.Atom("session"), int64(1700000000000), 0}, erl.Tuple{erl.Atom("other"), -1, 0}},
		5, int64(4096), 600000, 11, 2, 0}
}

func runningView() erl.Tuple {
	return erl.Tuple{erl.Atom("ok"), erl.List{
		kv("node", erl.Atom("a@h")),
		kv("connected", atomL("c@h", "b@h")),
		kv("hidden", atomL("migctl@h")),
		kv("is_running", erl.Atom("yes")),
		kv("recorder", recorderTerm()),
		kv("cookie", []byte("{1,2}")),
		kv("db_nodes", atomL("a@h", "b@h", "c@h")),
		kv("running_db_nodes", atomL("b@h", "a@h")),
		kv("schema_location", erl.Atom("opt_disc")),
		kv("use_dir", true),
		kv("tables", erl.List{
			erl.Tuple{erl.Atom("session"), erl.Atom("disc_copies"), 42, erl.Atom("a@h"),
				atomL("a@h", "b@h"), atomL("a@h", "b@h", "c@h"), atomL(), atomL()},
			erl.Tuple{erl.Atom("other"), erl.Atom("unknown"), -1, erl.Atom("nowhere"),
				atomL(), atomL("b@h"), atomL(), atomL()},
		}),
		kv("all_tables", atomL("schema", "session", "other")),
		kv("master_nodes", erl.List{erl.Tuple{erl.Atom("schema"), atomL()}, erl.Tuple{erl.Atom("session"), atomL("b@h")}}),
	}}
}

func TestViewReply(t *testing.T) {
	v, err := cm.viewReply("a@h", "view", runningView())
	require.NoError(t, err)
	require.Equal(t, View{
		IsRunning: "yes", Cookie: "{1,2}",
		Connected: []string{"c@h", "b@h"}, DBNodes: []string{"a@h", "b@h", "c@h"}, RunningDBNodes: []string{"b@h", "a@h"},
		Recorder: Recorder{Running: true,
			Since:   map[string]int64{"session": 1700000000000, "other": -1},
			Cleared: map[string]int64{"session": 0, "other": 0},
			Keys:    5, MemoryBytes: 4096, WindowMillis: 600000, Writes: 11, Deletes: 2},
		Tables: []ViewTable{
			{Name: "session", Storage: "disc_copies", Size: 42, LoadedFrom: "a@h",
				ActiveReplicas: []string{"a@h", "b@h"}, DiscCopies: []string{"a@h", "b@h", "c@h"}, RAMCopies: []string{}, MasterNodes: []string{}},
			{Name: "other", Storage: "unknown", Size: -1, LoadedFrom: "nowhere",
				ActiveReplicas: []string{}, DiscCopies: []string{"b@h"}, RAMCopies: []string{}, MasterNodes: []string{}},
		},
		MasterNodes: map[string][]string{"schema": {}, "session": {"b@h"}},
	}, v)
}

// Mnesia stopped: no cookie, no master nodes, the recorder's fallback.
func TestViewReplyStopped(t *testing.T) {
	v, err := cm.viewReply("a@h", "view", erl.Tuple{erl.Atom("ok"), erl.List{
		kv("node", erl.Atom("a@h")), kv("connected", atomL()), kv("hidden", atomL()),
		kv("is_running", erl.Atom("no")),
		kv("recorder", erl.Tuple{erl.Atom("ok"), false, erl.List{}, 0, 0, 0, 0, 0, 0}),
		kv("db_nodes", atomL("a@h", "b@h")), kv("running_db_nodes", atomL()), kv("tables", erl.List{}),
	}})
	require.NoError(t, err)
	require.Equal(t, "no", v.IsRunning)
	require.Empty(t, v.Cookie)
	require.Nil(t, v.MasterNodes)
	require.Empty(t, v.Tables)
	require.False(t, v.Recorder.Running)
	require.Equal(t, []string{"a@h", "b@h"}, v.DBNodes)
}

// Every part of a view that is not what view/1 documents is a shape error
// naming the function, not a silently empty field.
func TestViewReplyWrongShape(t *testing.T) {
	props := func() erl.List { return append(erl.List(nil), runningView()[1].(erl.List)...) }
	set := func(key string, v erl.Term) erl.Tuple {
		l := props()
		for i, p := range l {
			if p.(erl.Tuple)[0] == erl.Atom(key) {
				l[i] = kv(key, v)
			}
		}
		return erl.Tuple{erl.Atom("ok"), l}
	}
	drop := func(key string) erl.Tuple {
		var l erl.List
		for _, p := range props() {
			if p.(erl.Tuple)[0] != erl.Atom(key) {
				l = append(l, p)
			}
		}
		return erl.Tuple{erl.Atom("ok"), l}
	}
	badTable := erl.Tuple{erl.Atom("session"), erl.Atom("disc_copies"), erl.Atom("big"), erl.Atom("a@h"), atomL(), atomL(), atomL(), atomL()}
	for name, reply := range map[string]erl.Tuple{
		"not ok":              {erl.Atom("error"), erl.List{}},
		"extra element":       {erl.Atom("ok"), erl.List{}, 1},
		"props not a list":    {erl.Atom("ok"), []byte("x")},
		"prop not a pair":     {erl.Atom("ok"), erl.List{erl.Atom("is_running")}},
		"no is_running":       drop("is_running"),
		"no recorder":         drop("recorder"),
		"no tables":           drop("tables"),
		"cookie not binary":   set("cookie", erl.Atom("c")),
		"connected not atoms": set("connected", erl.List{[]byte("b@h")}),
		"db_nodes not list":   set("db_nodes", erl.Atom("a@h")),
		"recorder not tuple":  set("recorder", erl.List{}),
		"recorder short":      set("recorder", erl.Tuple{erl.Atom("ok"), true}),
		"recorder running":    set("recorder", erl.Tuple{erl.Atom("ok"), erl.Atom("maybe"), erl.List{}, 0, 0, 0, 0, 0, 0}),
		"recorder count":      set("recorder", erl.Tuple{erl.Atom("ok"), true, erl.List{}, 0, 0, []byte("x"), 0, 0, 0}),
		"table arity":         set("tables", erl.List{erl.Tuple{erl.Atom("session")}}),
		"table arity 9":       set("tables", erl.List{append(append(erl.Tuple{}, badTable[:2]...), 1, erl.Atom("a@h"), atomL(), atomL(), atomL(), atomL(), atomL())}),
		"table size":          set("tables", erl.List{badTable}),
		"master_nodes entry":  set("master_nodes", erl.List{erl.Atom("session")}),
		"master_nodes nodes":  set("master_nodes", erl.List{erl.Tuple{erl.Atom("session"), erl.Atom("b@h")}}),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cm.viewReply("a@h", "view", reply)
			requireShape(t, err, "migctl_cluster:view")
		})
	}
}

func TestStepsReply(t *testing.T) {
	st, err := cm.stepsReply("d@h", "join", erl.Tuple{erl.Atom("ok"), erl.List{
		kv("extra_db_nodes", atomL("a@h", "b@h")),
		kv("schema", erl.Atom("done")),
		kv("session", erl.Atom("already")),
		kv("master_nodes_cleared", atomL("session")),
	}})
	require.NoError(t, err)
	require.Equal(t, []MembershipStep{
		{What: "extra_db_nodes", Names: []string{"a@h", "b@h"}},
		{What: "schema", Outcome: "done"},
		{What: "session", Outcome: "already"},
		{What: "master_nodes_cleared", Names: []string{"session"}},
	}, st)
	st, err = cm.stepsReply("a@h", "del_copies", erl.Tuple{erl.Atom("ok"), erl.List{}})
	require.NoError(t, err)
	require.Empty(t, st)
	for _, bad := range []erl.Tuple{
		{erl.Atom("ok"), erl.Atom("done")},
		{erl.Atom("ok"), erl.List{erl.Atom("schema")}},
		{erl.Atom("ok"), erl.List{kv("schema", 1)}},
		{erl.Atom("ok"), erl.List{kv("schema", erl.List{1})}},
		{erl.Atom("ok")},
	} {
		_, err := cm.stepsReply("a@h", "del_schema", bad)
		requireShape(t, err, "migctl_cluster:del_schema")
	}
}

func TestReloadReply(t *testing.T) {
	ms, d, err := cm.reloadReply("a@h", "finish_reload", erl.Tuple{erl.Atom("ok"), int64(812), []byte("Mnesia started in 300 ms")})
	require.NoError(t, err)
	require.Equal(t, int64(812), ms)
	require.Equal(t, "Mnesia started in 300 ms", d)
	for _, bad := range []erl.Tuple{
		{erl.Atom("ok"), 812},
		{erl.Atom("ok"), erl.Atom("fast"), []byte("x")},
		{erl.Atom("ok"), 812, erl.Atom("x")},
	} {
		_, _, err := cm.reloadReply("a@h", "finish_reload", bad)
		requireShape(t, err, "migctl_cluster:finish_reload")
	}
}

func TestPidAndOkAtomReplies(t *testing.T) {
	pid := erl.Pid{Node: "a@h", ID: 77}
	got, err := cm.pidReply("a@h", "forwarder", erl.Tuple{erl.Atom("ok"), pid})
	require.NoError(t, err)
	require.Equal(t, pid, got)
	_, err = cm.pidReply("a@h", "forwarder", erl.Tuple{erl.Atom("ok"), erl.Atom("pid")})
	requireShape(t, err, "migctl_cluster:forwarder")

	require.NoError(t, cm.okAtomReply("a@h", "stop_mnesia", "stopped", erl.Tuple{erl.Atom("ok"), erl.Atom("stopped")}))
	requireShape(t, cm.okAtomReply("a@h", "prepare_reload", "stopped", erl.Tuple{erl.Atom("ok"), erl.Atom("started")}),
		"migctl_cluster:prepare_reload")
	requireShape(t, cm.okAtomReply("a@h", "forwarder_stop", "stopped", erl.Tuple{erl.Atom("ok")}), "migctl_cluster:forwarder_stop")
}

func TestConnectReply(t *testing.T) {
	got, err := cm.connectReply("a@h", "connect", erl.Tuple{erl.Atom("ok"), erl.List{
		erl.Tuple{erl.Atom("b@h"), true}, erl.Tuple{erl.Atom("c@h"), false}}})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"b@h": true, "c@h": false}, got)
	for _, bad := range []erl.Tuple{
		{erl.Atom("ok"), erl.Atom("b@h")},
		{erl.Atom("ok"), erl.List{erl.Tuple{erl.Atom("b@h"), erl.Atom("ignored")}}},
		{erl.Atom("ok"), erl.List{erl.Atom("b@h")}},
	} {
		_, err := cm.connectReply("a@h", "connect", bad)
		requireShape(t, err, "migctl_cluster:connect")
	}
}

func TestIsRunningReply(t *testing.T) {
	mm := module{name: "mnesia"}
	for _, a := range []string{"yes", "no", "starting", "stopping"} {
		got, err := isRunningReply(mm, "a@h", "system_info", erl.Atom(a))
		require.NoError(t, err)
		require.Equal(t, a, got)
	}
	_, err := isRunningReply(mm, "a@h", "system_info", erl.Tuple{erl.Atom("badrpc"), erl.Atom("nodedown")})
	requireShape(t, err, "mnesia:system_info")
}

func TestParseClusterEvent(t *testing.T) {
	e, ok := ParseClusterEvent(erl.Tuple{erl.Atom("migctl_cluster_event"), erl.Atom("a@h"), erl.Atom("mnesia_down"), erl.Atom("b@h"), []byte("{mnesia_down,b@h}")})
	require.True(t, ok)
	require.Equal(t, ClusterEvent{Node: "a@h", Kind: "mnesia_down", Peer: "b@h", Text: "{mnesia_down,b@h}"}, e)
	e, ok = ParseClusterEvent(erl.Tuple{erl.Atom("migctl_cluster_event"), erl.Atom("a@h"), erl.Atom("subscribed"), erl.Atom("none"), []byte{}})
	require.True(t, ok)
	require.Equal(t, ClusterEvent{Node: "a@h", Kind: "subscribed"}, e)
	for _, bad := range []erl.Term{
		erl.Atom("migctl_cluster_event"),
		erl.Tuple{erl.Atom("migctl_cluster_event"), erl.Atom("a@h"), erl.Atom("nodeup"), erl.Atom("b@h")},
		erl.Tuple{erl.Atom("migctl_cluster_event"), []byte("a@h"), erl.Atom("nodeup"), erl.Atom("b@h"), []byte{}},
		erl.Tuple{erl.Atom("migctl_cluster_event"), erl.Atom("a@h"), erl.Atom("nodeup"), erl.Atom("b@h"), erl.Atom("text")},
	} {
		_, ok := ParseClusterEvent(bad)
		require.False(t, ok, "%v", bad)
	}
}

func TestParseNodeDown(t *testing.T) {
	n, ok := ParseNodeDown(erl.Tuple{erl.Atom("nodedown"), erl.Atom("b@h")})
	require.True(t, ok)
	require.Equal(t, "b@h", n)
	for _, bad := range []erl.Term{
		erl.Tuple{erl.Atom("nodeup"), erl.Atom("b@h")},
		erl.Tuple{erl.Atom("nodedown"), []byte("b@h")},
		erl.Tuple{erl.Atom("nodedown")},
		erl.Atom("nodedown"),
	} {
		_, ok := ParseNodeDown(bad)
		require.False(t, ok, "%v", bad)
	}
}

// The shape error names the module and the function, and the node.
func TestShapeErrorNamesFunction(t *testing.T) {
	err := cm.shape("a@h", "view", "x")
	require.True(t, errors.Is(err, ErrReplyShape))
	require.True(t, strings.Contains(err.Error(), "migctl_cluster:view") && strings.Contains(err.Error(), "a@h"), err.Error())
}
