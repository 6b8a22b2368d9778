package agentapi

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// The decodes of migctl_migrate's replies, on terms built as ergo decodes
// them (small integers as int or int64, true/false as bools, binaries as
// []byte).

var migMod = module{name: "migctl_migrate"}

// requireMigShape checks err is a wrong-shape error naming fun.
func requireMigShape(t *testing.T, err error, fun string) {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrReplyShape), "not ErrReplyShape: %v", err)
	require.Contains(t, err.Error(), "migctl_migrate:"+fun)
	require.Contains(t, err.Error(), "n1@host")
}

func migOK(xs ...erl.Term) erl.Tuple { return append(erl.Tuple{erl.Atom("ok")}, xs...) }

func migPair(k string, v erl.Term) erl.Tuple { return erl.Tuple{erl.Atom(k), v} }

func TestMigrateStatus(t *testing.T) {
	hybrid := migOK(erl.List{
		migPair("installed", true), migPair("backend", erl.Atom("erlmcp_session_backend_hybrid")),
		migPair("phase", erl.Atom("phase2")), migPair("percent", 40), migPair("epoch", int64(7)),
		migPair("fallback", false), migPair("mode", erl.Atom("mnesia")),
		migPair("primary", erl.Tuple{erl.Atom("dets"), erl.Atom("erlmcp_sessions_dets")}),
		migPair("secondary", erl.Tuple{erl.Atom("mnesia"), erl.Atom("erlmcp_session")}),
		migPair("counters", erl.List{migPair("fallback_reads", 3), migPair("dual_writes", int64(1<<40))}),
		migPair("dual_writes_pending", 12),
		migPair("from_a_newer_agent", erl.Tuple{1, 2, 3}),
	})
	st, err := decodeStatus(migMod, "n1@host", hybrid)
	require.NoError(t, err)
	require.Equal(t, MigrateStatus{Installed: true, Backend: "erlmcp_session_backend_hybrid", Phase: "phase2",
		Percent: 40, Epoch: 7, Fallback: false, Mode: "mnesia",
		Primary:           HybridSide{Kind: "dets", Table: "erlmcp_sessions_dets"},
		Secondary:         HybridSide{Kind: "mnesia", Table: "erlmcp_session"},
		Counters:          map[string]int64{"fallback_reads": 3, "dual_writes": 1 << 40},
		DualWritesPending: 12}, st)

	// A node without the hybrid: two pairs, no counters.
	st, err = decodeStatus(migMod, "n1@host", migOK(erl.List{migPair("installed", false), migPair("backend", erl.Atom("erlmcp_session_ets"))}))
	require.NoError(t, err)
	require.Equal(t, MigrateStatus{Backend: "erlmcp_session_ets"}, st)
	require.Nil(t, st.Counters)

	for name, bad := range map[string]erl.Tuple{
		"no list":            migOK(erl.Atom("installed")),
		"arity":              migOK(erl.List{}, 1),
		"error tag":          {erl.Atom("error"), erl.List{}},
		"not a pair":         migOK(erl.List{erl.Tuple{erl.Atom("installed"), true, true}}),
		"installed not bool": migOK(erl.List{migPair("installed", erl.Atom("true"))}),
		"percent not int":    migOK(erl.List{migPair("percent", 4.5)}),
		"epoch not int":      migOK(erl.List{migPair("epoch", []byte("7"))}),
		"primary arity":      migOK(erl.List{migPair("primary", erl.Tuple{erl.Atom("dets")})}),
		"counter not int":    migOK(erl.List{migPair("counters", erl.List{migPair("x", erl.Atom("many"))})}),
		"counters not list":  migOK(erl.List{migPair("counters", 3)}),
		"pending not int":    migOK(erl.List{migPair("dual_writes_pending", erl.Atom("none"))}),
	} {
		_, err := decodeStatus(migMod, "n1@host", bad)
		t.Run(name, func(t *testing.T) { requireMigShape(t, err, "status") })
	}
}

func TestMigrateLoad(t *testing.T) {
	l, err := decodeLoad(migMod, "n1@host", migOK(erl.List{migPair("sched_util", 0.25), migPair("run_queue", 2),
		migPair("store_queue", int64(40)), migPair("mnesia_tm_queue", 0), migPair("overloads", 5), migPair("new_key", 1.0)}))
	require.NoError(t, err)
	require.Equal(t, NodeLoad{SchedUtil: 0.25, RunQueue: 2, StoreQueue: 40, Overloads: 5}, l)
	// -1 (not measurable) as an integer still reads.
	l, err = decodeLoad(migMod, "n1@host", migOK(erl.List{migPair("sched_util", -1)}))
	require.NoError(t, err)
	require.Equal(t, -1.0, l.SchedUtil)

	_, err = decodeLoad(migMod, "n1@host", migOK(erl.List{migPair("run_queue", 0.5)}))
	requireMigShape(t, err, "load")
	_, err = decodeLoad(migMod, "n1@host", migOK(erl.List{migPair("sched_util", erl.Atom("undefined"))}))
	requireMigShape(t, err, "load")
	_, err = decodeLoad(migMod, "n1@host", migOK())
	requireMigShape(t, err, "load")
}

func TestMigrateScalars(t *testing.T) {
	e, err := migOkInt(migMod, "n1@host", "set_phase", migOK(int64(12)))
	require.NoError(t, err)
	require.Equal(t, int64(12), e)
	_, err = migOkInt(migMod, "n1@host", "set_phase", migOK(erl.Atom("done")))
	requireMigShape(t, err, "set_phase")
	_, err = migOkInt(migMod, "n1@host", "set_phase", migOK(1, 2))
	requireMigShape(t, err, "set_phase")

	id, has, err := decodeClusterID(migMod, "n1@host", migOK([]byte("{1733,456}")))
	require.NoError(t, err)
	require.True(t, has)
	require.Equal(t, "{1733,456}", id)
	_, has, err = decodeClusterID(migMod, "n1@host", migOK(erl.Atom("none")))
	require.NoError(t, err)
	require.False(t, has)
	_, _, err = decodeClusterID(migMod, "n1@host", migOK(erl.Atom("other")))
	requireMigShape(t, err, "cluster_id")

	b, err := migOkBinary(migMod, "n1@host", "read_chunk", migOK([]byte{}))
	require.NoError(t, err)
	require.Empty(t, b)
	_, err = migOkBinary(migMod, "n1@host", "read_chunk", migOK("a charlist"))
	requireMigShape(t, err, "read_chunk")

	rows, took, err := decodeNativeCopy(migMod, "n1@host", migOK(1000, int64(2500000)))
	require.NoError(t, err)
	require.Equal(t, int64(1000), rows)
	require.Equal(t, 2500*time.Millisecond, took)
	_, _, err = decodeNativeCopy(migMod, "n1@host", migOK(1000))
	requireMigShape(t, err, "native_copy")
}

func TestMigrateSchemaReplies(t *testing.T) {
	ns, err := decodeSchemaState(migMod, "n1@host", migOK(erl.List{
		erl.Tuple{erl.Atom("a@h"), true, true}, erl.Tuple{erl.Atom("b@h"), false, false}}))
	require.NoError(t, err)
	require.Equal(t, []SchemaNode{{"a@h", true, true}, {"b@h", false, false}}, ns)
	_, err = decodeSchemaState(migMod, "n1@host", migOK(erl.List{erl.Tuple{erl.Atom("a@h"), true, erl.Atom("yes")}}))
	requireMigShape(t, err, "schema_state")

	ts, err := decodeCreateTables(migMod, "n1@host", migOK(erl.List{
		migPair("erlmcp_session", erl.Atom("created")), migPair("migctl_migration", erl.Atom("exists"))}))
	require.NoError(t, err)
	require.Equal(t, []TableState{{"erlmcp_session", "created"}, {"migctl_migration", "exists"}}, ts)
	_, err = decodeCreateTables(migMod, "n1@host", migOK(erl.List{erl.Atom("erlmcp_session")}))
	requireMigShape(t, err, "create_tables")

	fs, err := decodeDetsFiles(migMod, "n1@host", migOK(erl.List{erl.Tuple{erl.Atom("erlmcp_sessions_dets"), []byte("/var/d/s.dets"), 5462}}))
	require.NoError(t, err)
	require.Equal(t, []DetsFile{{"erlmcp_sessions_dets", "/var/d/s.dets", 5462}}, fs)
	fs, err = decodeDetsFiles(migMod, "n1@host", migOK(erl.List{}))
	require.NoError(t, err)
	require.Empty(t, fs)
	_, err = decodeDetsFiles(migMod, "n1@host", migOK(erl.List{erl.Tuple{erl.Atom("t"), "a charlist", 1}}))
	requireMigShape(t, err, "dets_files")
}

func TestMigrateBenchLatency(t *testing.T) {
	ls, err := decodeBenchLatency(migMod, "n1@host", migOK(erl.List{
		erl.Tuple{erl.Atom("hybrid_store"), 12.5, 40.25}, erl.Tuple{erl.Atom("both_fetch"), 9, int64(11)}}))
	require.NoError(t, err)
	require.Equal(t, []OpLatency{{"hybrid_store", 12.5, 40.25}, {"both_fetch", 9, 11}}, ls)
	_, err = decodeBenchLatency(migMod, "n1@host", migOK(erl.List{erl.Tuple{erl.Atom("x"), 1.0}}))
	requireMigShape(t, err, "bench_latency")
}

// migPersistFrame is <<Kind:8, Len:32, Id/binary>> and, for a snapshot,
// <<Digest:64, ExpiresAt:64>>.
func migPersistFrame(kind byte, id string, tail ...uint64) []byte {
	b := append([]byte{kind}, binary.BigEndian.AppendUint32(nil, uint32(len(id)))...)
	b = append(b, id...)
	for _, v := range tail {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func TestMigratePersistSnapshot(t *testing.T) {
	frames := append(migPersistFrame(0, "s1", 0xfeedface12345678, 1700000000000), migPersistFrame(1, "", 1, 0)...)
	s, err := decodePersistSnapshot(migMod, "n1@host", migOK(frames, 2, int64(1700000000500)))
	require.NoError(t, err)
	require.Equal(t, PersistSnapshot{At: 1700000000500, Rows: map[string]PersistDigest{
		"\x00s1": {Digest: 0xfeedface12345678, ExpiresAt: 1700000000000},
		"\x01":   {Digest: 1}}}, s)

	s, err = decodePersistSnapshot(migMod, "n1@host", migOK([]byte{}, 0, 5))
	require.NoError(t, err)
	require.Empty(t, s.Rows)

	// Every cut inside the frames is an error, never a shorter snapshot.
	for cut := 1; cut < len(frames); cut++ {
		if cut == len(migPersistFrame(0, "s1", 0, 0)) {
			continue // a whole first frame
		}
		_, err := decodePersistSnapshot(migMod, "n1@host", migOK(frames[:cut], 2, 5))
		requireMigShape(t, err, "persist_snapshot")
	}
	_, err = decodePersistSnapshot(migMod, "n1@host", migOK(frames, 2))
	requireMigShape(t, err, "persist_snapshot")
}

func TestMigratePersistTouched(t *testing.T) {
	ids := append(migPersistFrame(0, "a"), migPersistFrame(0, "bb")...)
	got, err := decodePersistTouched(migMod, "n1@host", migOK(erl.Atom("on"), ids, 2, false, true, true))
	require.NoError(t, err)
	require.Equal(t, PersistTouched{On: true, IDs: map[string]bool{"\x00a": true, "\x00bb": true}, Unclean: true, Resumed: true}, got)

	got, err = decodePersistTouched(migMod, "n1@host", migOK(erl.Atom("on"), []byte{}, 0, false, false, false))
	require.NoError(t, err)
	require.NotNil(t, got.IDs, "an empty touched set is a set, not none")

	got, err = decodePersistTouched(migMod, "n1@host", migOK(erl.Atom("off"), erl.Atom("expired")))
	require.NoError(t, err)
	require.Equal(t, PersistTouched{Why: "expired"}, got)

	for name, bad := range map[string]erl.Tuple{
		"off without why": migOK(erl.Atom("off")),
		"on arity":        migOK(erl.Atom("on"), ids, 2, false, true),
		"flag not bool":   migOK(erl.Atom("on"), ids, 2, false, erl.Atom("true"), true),
		"ids not binary":  migOK(erl.Atom("on"), "a", 1, false, false, false),
		"truncated":       migOK(erl.Atom("on"), ids[:len(ids)-1], 2, false, false, false),
		"unknown tag":     migOK(erl.Atom("maybe"), erl.Atom("x")),
	} {
		_, err := decodePersistTouched(migMod, "n1@host", bad)
		t.Run(name, func(t *testing.T) { requireMigShape(t, err, "persist_touched") })
	}
}

// The shape error carries the reply, so an operator sees what came back.
func TestMigrateShapeErrorShowsReply(t *testing.T) {
	_, err := decodeLoad(migMod, "n1@host", migOK(erl.Atom("weird")))
	require.True(t, strings.Contains(err.Error(), "weird"), err.Error())
}
