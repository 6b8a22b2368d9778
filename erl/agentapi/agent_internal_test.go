package agentapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

var agentMod = module{name: "migctl_agent"}

// requireShape checks err is a reply-shape error that names the function.
func requireShape(t *testing.T, err error, fun string) {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrReplyShape), "%v does not wrap ErrReplyShape", err)
	require.Contains(t, err.Error(), fun)
}

func TestDescribeReply(t *testing.T) {
	ok := erl.Atom("ok")
	got, err := agentMod.describeReply("n@h", erl.Tuple{ok, erl.List{
		erl.Tuple{erl.Atom("exists"), true},
		erl.Tuple{erl.Atom("size"), int64(42)},
		erl.Tuple{erl.Atom("layout"), erl.Atom("ok")},
		erl.Tuple{erl.Atom("kind"), erl.Atom("mnesia")}, // not read: passed over
		erl.Tuple{erl.Atom("storage"), erl.Atom("disc_copies")},
		erl.Tuple{erl.Atom("copies"), erl.List{[]byte("a@h"), []byte("b@h")}},
	}})
	require.NoError(t, err)
	require.Equal(t, StoreInfo{Exists: true, Size: 42, Layout: "ok", Storage: "disc_copies", Copies: []string{"a@h", "b@h"}}, got)

	got, err = agentMod.describeReply("n@h", erl.Tuple{ok, erl.List{
		erl.Tuple{erl.Atom("exists"), true}, erl.Tuple{erl.Atom("size"), 7},
		erl.Tuple{erl.Atom("layout"), erl.Atom("not_session_rows")},
		erl.Tuple{erl.Atom("file"), []byte("/data/s.dets")}}})
	require.NoError(t, err)
	require.Equal(t, StoreInfo{Exists: true, Size: 7, Layout: "not_session_rows", File: "/data/s.dets"}, got)

	for name, bad := range map[string]erl.Tuple{
		"not a list":       {ok, erl.Atom("x")},
		"prop not a pair":  {ok, erl.List{erl.Atom("exists")}},
		"exists not bool":  {ok, erl.List{erl.Tuple{erl.Atom("exists"), erl.Atom("yes")}}},
		"size not integer": {ok, erl.List{erl.Tuple{erl.Atom("size"), []byte("7")}}},
		"copies not list":  {ok, erl.List{erl.Tuple{erl.Atom("copies"), []byte("a@h")}}},
		"arity":            {ok, erl.List{}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := agentMod.describeReply("n@h", bad)
			requireShape(t, err, "migctl_agent:describe")
		})
	}
}

func TestIntsReply(t *testing.T) {
	n, err := agentMod.intsReply("n@h", "count", erl.Tuple{erl.Atom("ok"), 12}, 1)
	require.NoError(t, err)
	require.EqualValues(t, 12, n)
	_, err = agentMod.intsReply("n@h", "count", erl.Tuple{erl.Atom("ok"), erl.Atom("undefined")}, 1)
	requireShape(t, err, "migctl_agent:count")
	_, err = agentMod.intsReply("n@h", "put", erl.Tuple{erl.Atom("ok"), 1}, 2)
	requireShape(t, err, "migctl_agent:put")
}

func TestGetReply(t *testing.T) {
	b, found, err := agentMod.getReply("n@h", erl.Tuple{erl.Atom("ok"), []byte{131, 106}})
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, []byte{131, 106}, b)
	_, found, err = agentMod.getReply("n@h", erl.Tuple{erl.Atom("ok"), erl.Atom("not_found")})
	require.NoError(t, err)
	require.False(t, found)
	_, _, err = agentMod.getReply("n@h", erl.Tuple{erl.Atom("ok"), erl.Atom("undefined")})
	requireShape(t, err, "migctl_agent:get")
}

func TestStreamReply(t *testing.T) {
	ok := erl.Atom("ok")
	b, err := agentMod.streamReply("n@h", erl.Tuple{ok, []byte("frames"), []byte("cur"), 3})
	require.NoError(t, err)
	require.Equal(t, StreamBatch{Frames: []byte("frames"), Next: []byte("cur"), N: 3}, b)
	b, err = agentMod.streamReply("n@h", erl.Tuple{ok, []byte{}, erl.Atom("done"), 0})
	require.NoError(t, err)
	require.True(t, b.Done)
	require.Nil(t, b.Next)
	for _, bad := range []erl.Tuple{
		{ok, []byte{}, erl.Atom("finished"), 0}, // neither a cursor nor done
		{ok, erl.Atom("x"), erl.Atom("done"), 0},
		{ok, []byte{}, erl.Atom("done"), erl.Atom("n")},
		{ok, []byte{}, erl.Atom("done")},
	} {
		_, err := agentMod.streamReply("n@h", bad)
		requireShape(t, err, "migctl_agent:stream")
	}
}

func TestPidsReply(t *testing.T) {
	p1, p2 := erl.Pid{Node: "n@h", ID: 1}, erl.Pid{Node: "n@h", ID: 2}
	pids, err := agentMod.pidsReply("n@h", "stream_push_parts", erl.Tuple{erl.Atom("ok"), erl.List{p1, p2}}, 2)
	require.NoError(t, err)
	require.Equal(t, []erl.Pid{p1, p2}, pids)
	_, err = agentMod.pidsReply("n@h", "stream_push_parts", erl.Tuple{erl.Atom("ok"), erl.List{p1}}, 2)
	requireShape(t, err, "stream_push_parts")
	_, err = agentMod.pidsReply("n@h", "stream_push_parts", erl.Tuple{erl.Atom("ok"), erl.List{p1, erl.Atom("x")}}, 2)
	requireShape(t, err, "stream_push_parts")
}

// The pushed stream's messages, as migctl_agent:push_loop/7 sends them.
func TestParseStreamMsg(t *testing.T) {
	tag := []byte("tag")
	msg := func(res erl.Term) erl.Term { return erl.Tuple{erl.Atom("migctl_stream"), tag, res} }

	m, err := ParseStreamMsg(msg(erl.Tuple{erl.Atom("more"), []byte{131, 106}}))
	require.NoError(t, err)
	require.Equal(t, StreamMsg{More: true, Rows: true, Bin: []byte{131, 106}}, m)

	m, err = ParseStreamMsg(msg(erl.Tuple{erl.Atom("ok"), erl.Tuple{erl.Atom("rows"), []byte{1}}, []byte("next"), 64}))
	require.NoError(t, err)
	require.Equal(t, StreamMsg{Rows: true, Bin: []byte{1}, Next: []byte("next"), N: 64}, m)

	// A partitioned stream's Next is <<>> until done: not done.
	m, err = ParseStreamMsg(msg(erl.Tuple{erl.Atom("ok"), erl.Tuple{erl.Atom("rows"), []byte{1}}, []byte{}, 1}))
	require.NoError(t, err)
	require.False(t, m.Done)

	m, err = ParseStreamMsg(msg(erl.Tuple{erl.Atom("ok"), []byte("frames"), erl.Atom("done"), 2}))
	require.NoError(t, err)
	require.Equal(t, StreamMsg{Bin: []byte("frames"), Done: true, N: 2}, m)

	m, err = ParseStreamMsg(msg(erl.Tuple{erl.Atom("error"), erl.Atom("no_such_table")}))
	require.NoError(t, err)
	require.Equal(t, StreamMsg{Failed: true, Reason: "no_such_table"}, m)
	// Binary reasons (DETS file errors) read as their text.
	m, err = ParseStreamMsg(msg(erl.Tuple{erl.Atom("error"), []byte("dets_other_file: /x")}))
	require.NoError(t, err)
	require.Equal(t, "dets_other_file: /x", m.Reason)

	for name, bad := range map[string]erl.Term{
		"not a tuple":    erl.Atom("migctl_stream"),
		"other tag atom": erl.Tuple{erl.Atom("other"), tag, erl.Tuple{erl.Atom("more"), []byte{}}},
		"more not bin":   msg(erl.Tuple{erl.Atom("more"), erl.Atom("x")}),
		"rows arity":     msg(erl.Tuple{erl.Atom("ok"), erl.Tuple{erl.Atom("rows")}, erl.Atom("done"), 0}),
		"bad next":       msg(erl.Tuple{erl.Atom("ok"), []byte{}, 7, 0}),
		"count":          msg(erl.Tuple{erl.Atom("ok"), []byte{}, erl.Atom("done"), []byte{}}),
		"arity 3":        msg(erl.Tuple{erl.Atom("ok"), []byte{}, erl.Atom("done")}),
	} {
		_, err := ParseStreamMsg(bad)
		require.ErrorIs(t, err, ErrReplyShape, name)
		require.Contains(t, err.Error(), "migctl_agent:stream_push", name)
	}
}

// A shape error quotes the reply, but not half a megabyte of it.
func TestShapeErrorIsShort(t *testing.T) {
	err := agentMod.shape("n@h", "stream", erl.Tuple{erl.Atom("ok"), make([]byte, 1<<20)})
	require.ErrorIs(t, err, ErrReplyShape)
	require.Less(t, len(err.Error()), 1000)
	require.True(t, strings.HasSuffix(err.Error(), "..."), err.Error())
}

func TestPutIfReply(t *testing.T) {
	r, err := agentMod.putIfReply("n@h", erl.Tuple{erl.Atom("ok"), 3, 1, int64(2)})
	require.NoError(t, err)
	require.Equal(t, CASResult{Written: 3, Deleted: 1, Skipped: 2}, r)
	_, err = agentMod.putIfReply("n@h", erl.Tuple{erl.Atom("ok"), 3, 1})
	requireShape(t, err, "migctl_agent:put_if")
}

func TestRoutedReply(t *testing.T) {
	got, err := agentMod.routedReply("n@h", erl.Tuple{erl.Atom("ok"), []byte{1, 0, 1}}, 3)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true}, got)
	// One answer per id, or it is not the reply to this request.
	_, err = agentMod.routedReply("n@h", erl.Tuple{erl.Atom("ok"), []byte{1, 0}}, 3)
	requireShape(t, err, "migctl_agent:routed")
}

func TestHybridSidesReply(t *testing.T) {
	m := module{name: "migctl_migrate"}
	ok := erl.Atom("ok")
	h, err := m.hybridSidesReply("n@h", erl.Tuple{ok, erl.List{
		erl.Tuple{erl.Atom("installed"), true},
		erl.Tuple{erl.Atom("backend"), erl.Atom("erlmcp_session_hybrid")},
		erl.Tuple{erl.Atom("phase"), erl.Atom("phase2")},
		erl.Tuple{erl.Atom("percent"), 30},
		erl.Tuple{erl.Atom("epoch"), int64(4)},
		erl.Tuple{erl.Atom("primary"), erl.Tuple{erl.Atom("dets"), erl.Atom("erlmcp_sessions_dets")}},
		erl.Tuple{erl.Atom("secondary"), erl.Tuple{erl.Atom("mnesia"), erl.Atom("erlmcp_session")}},
		erl.Tuple{erl.Atom("counters"), erl.List{erl.Tuple{erl.Atom("reads"), 9}}},
	}})
	require.NoError(t, err)
	require.Equal(t, HybridSides{Installed: true, Phase: "phase2", Percent: 30, Primary: "dets", Secondary: "mnesia"}, h)

	h, err = m.hybridSidesReply("n@h", erl.Tuple{ok, erl.List{
		erl.Tuple{erl.Atom("installed"), false}, erl.Tuple{erl.Atom("backend"), erl.Atom("erlmcp_session_ets")}}})
	require.NoError(t, err)
	require.Equal(t, HybridSides{}, h)

	for _, bad := range []erl.Tuple{
		{ok, erl.Atom("x")},
		{ok, erl.List{erl.Tuple{erl.Atom("installed"), erl.Atom("true")}}},
		{ok, erl.List{erl.Tuple{erl.Atom("percent"), []byte("30")}}},
		{ok, erl.List{erl.Tuple{erl.Atom("primary"), erl.Atom("dets")}}},
		{ok, erl.List{erl.Tuple{erl.Atom("phase"), []byte("phase2")}}},
	} {
		_, err := m.hybridSidesReply("n@h", bad)
		requireShape(t, err, "migctl_migrate:status")
	}
}

func TestReleaseReply(t *testing.T) {
	m := module{name: "erlang"}
	rel, err := m.releaseReply("n@h", "27") // a charlist decodes as a Go string
	require.NoError(t, err)
	require.Equal(t, "27", rel)
	_, err = m.releaseReply("n@h", erl.Atom("27"))
	requireShape(t, err, "erlang:system_info")
}
