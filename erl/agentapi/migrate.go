package agentapi

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Migrate is the stub of migctl_migrate (erlang/agent/migctl_migrate.erl),
// the node-side half of package migrate (and of internal/benchkit's
// migration benches): package migrate calls the module through it only.
// The key-value replies (status/0, load/1) are in migratestatus.go.
type Migrate struct{ C *erl.Client }

func (s Migrate) mod() module { return module{c: s.C, name: "migctl_migrate"} }

// ErrCursorExpired: the node no longer has the pass the cursor points into
// (the DETS file was reopened, the store server restarted): the pass starts
// again from the beginning (batches are idempotent).
var ErrCursorExpired = errors.New("backfill cursor expired")

// ErrBatchTimeout: the call's first batch did not get its turn of the
// store server within StepTimeout (the server is stalled: a Mnesia log
// dump under the node's commit, say). Nothing of the call is lost (a
// batch is idempotent, and one that did run late only wrote what was
// newer), so the same cursor can be tried again. A timeout after earlier
// batches of the call is not an error: the reply carries their progress.
var ErrBatchTimeout = errors.New("backfill batch timed out in the store server")

// ErrBatchConflict: the call's first batch gave up on a lock conflict on
// the Mnesia table (another transaction holds locks on it for long; the
// batch does not keep the store server waiting for them). Nothing was
// written; the same cursor can be tried again later.
var ErrBatchConflict = errors.New("backfill batch gave up on a Mnesia lock conflict")

// Backfill ops.
const (
	OpForward = "forward" // old store -> new store
	OpReverse = "reverse" // new store -> old store
	OpPrune   = "prune"   // reverse only: delete from the old store what the new one lacks
)

// StepsRequest is one call of migctl_migrate:backfill_steps/9: batches,
// each its own turn of the node's store server, until the pass is done,
// MaxRows were scanned or CallBudget has passed.
type StepsRequest struct {
	Op     string // OpForward, OpReverse or OpPrune
	Cursor []byte // nil to start a pass; else the previous reply's Next
	// Batch is the most rows per batch; TurnBudget is what a batch may
	// take while the application's requests wait behind it (the node
	// sizes batches between the two, see backfill_steps/9).
	Batch      int
	TurnBudget time.Duration
	DryRun     bool
	// StepTimeout bounds one batch.
	StepTimeout time.Duration
	MaxRows     int
	CallBudget  time.Duration
	// Owners are the migration's nodes for a way back to per-node files
	// (each session back to the node that serves it); empty: every row.
	Owners []string
}

// StepsReply sums the call's batches.
type StepsReply struct {
	Scanned, Written, Skipped, Expired, Deleted int64
	// Next is the opaque cursor to pass back; Done: the pass is over.
	Next []byte
	Done bool
}

// BackfillSteps runs req on node. ErrCursorExpired (wrapped) when the pass
// is gone; ErrBatchTimeout or ErrBatchConflict (wrapped) when its first
// batch timed out or gave up on a lock conflict.
func (s Migrate) BackfillSteps(ctx context.Context, node string, req StepsRequest) (StepsReply, error) {
	const fun = "backfill_steps"
	m := s.mod()
	owners := etf.List{}
	for _, n := range req.Owners {
		owners = append(owners, etf.Atom(n))
	}
	t, err := m.call(ctx, node, fun, etf.Atom(req.Op), req.Cursor, req.Batch, req.DryRun,
		int(req.StepTimeout/time.Millisecond), req.MaxRows, int(req.CallBudget/time.Millisecond), owners,
		max(1, int(req.TurnBudget/time.Millisecond)))
	if err != nil {
		var re *erl.RPCError
		if errors.As(err, &re) && re.Reason == "cursor_expired" {
			return StepsReply{}, errors.Join(ErrCursorExpired, err)
		}
		if errors.As(err, &re) && re.Reason == "timeout" {
			return StepsReply{}, errors.Join(ErrBatchTimeout, err)
		}
		if errors.As(err, &re) && re.Reason == "lock_conflict" {
			return StepsReply{}, errors.Join(ErrBatchConflict, err)
		}
		return StepsReply{}, err
	}
	// {ok, Scanned, Written, Skipped, Expired, Deleted, Next, Done}
	if err := m.okN(node, fun, t, 7); err != nil {
		return StepsReply{}, err
	}
	done, ok := t[7].(bool)
	if !ok {
		return StepsReply{}, m.shape(node, fun, t)
	}
	return StepsReply{Scanned: asInt(t[1]), Written: asInt(t[2]), Skipped: asInt(t[3]), Expired: asInt(t[4]),
		Deleted: asInt(t[5]), Next: asBytes(t[6]), Done: done}, nil
}

// SetPhase sets node's hybrid to phase (phase0..phase3) at percent, if its
// epoch is still expect, and returns the new epoch. A changed epoch is an
// *erl.RPCError with reason epoch_mismatch; a node without the hybrid,
// reason hybrid_not_installed (or another reason the hybrid gives).
// Reply: {ok, NewEpoch}.
func (s Migrate) SetPhase(ctx context.Context, node, phase string, percent int, expect int64, fallback bool) (int64, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "set_phase", etf.Atom(phase), percent, expect, fallback)
	if err != nil {
		return 0, err
	}
	return migOkInt(m, node, "set_phase", t)
}

func migOkInt(m module, node, fun string, t etf.Tuple) (int64, error) {
	if m.okN(node, fun, t, 1) != nil || !migIsInt(t[1]) {
		return 0, m.shape(node, fun, t)
	}
	return asInt(t[1]), nil
}

// StopWatch stops node's overload watcher (the one Load starts); it would
// stop anyway when this client's process goes away. Reply: {ok, done}.
func (s Migrate) StopWatch(ctx context.Context, node string) error {
	_, err := s.mod().call(ctx, node, "stop_watch")
	return err
}

// ClusterID returns the Mnesia schema's cookie on node, the same on every
// node of one cluster (as printed by the node: opaque); ok is false when
// Mnesia does not run there. Reply: {ok, Binary} | {ok, none}.
func (s Migrate) ClusterID(ctx context.Context, node string) (id string, ok bool, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "cluster_id")
	if err != nil {
		return "", false, err
	}
	return decodeClusterID(m, node, t)
}

func decodeClusterID(m module, node string, t etf.Tuple) (string, bool, error) {
	if m.okN(node, "cluster_id", t, 1) == nil {
		switch v := t[1].(type) {
		case []byte:
			return string(v), true, nil
		case etf.Atom:
			if v == "none" {
				return "", false, nil
			}
		}
	}
	return "", false, m.shape(node, "cluster_id", t)
}

// SchemaNode is one node's Mnesia schema state.
type SchemaNode struct {
	Node          string
	HasSchema     bool // a disc schema
	MnesiaRunning bool
}

// SchemaState asks node (one of nodes) for the schema state of each of
// nodes. Reply: {ok, [{Node, HasDiscSchema, MnesiaRunning}]}.
func (s Migrate) SchemaState(ctx context.Context, node string, nodes []string) ([]SchemaNode, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "schema_state", atoms(nodes))
	if err != nil {
		return nil, err
	}
	return decodeSchemaState(m, node, t)
}

func decodeSchemaState(m module, node string, t etf.Tuple) ([]SchemaNode, error) {
	l, ok := migOkList(m, t)
	if !ok {
		return nil, m.shape(node, "schema_state", t)
	}
	var out []SchemaNode
	for _, x := range l {
		xt, ok := x.(etf.Tuple)
		if !ok || len(xt) != 3 {
			return nil, m.shape(node, "schema_state", t)
		}
		n, ok1 := migText(xt[0])
		h, ok2 := xt[1].(bool)
		r, ok3 := xt[2].(bool)
		if !ok1 || !ok2 || !ok3 {
			return nil, m.shape(node, "schema_state", t)
		}
		out = append(out, SchemaNode{Node: n, HasSchema: h, MnesiaRunning: r})
	}
	return out, nil
}

// CreateSchema has node make a disc schema on nodes (Mnesia is stopped
// and started again on each). It refuses, with an *erl.RPCError whose
// reason begins with schema_exists, when one of them has a schema on
// disc, unless force (then that schema and its tables are deleted first).
// Reply: {ok, NodeCount}.
func (s Migrate) CreateSchema(ctx context.Context, node string, nodes []string, force bool) error {
	_, err := s.mod().call(ctx, node, "create_schema", atoms(nodes), force)
	return err
}

// TableState is one table CreateTables made or found.
type TableState struct {
	Table string
	State string // created, exists
}

// CreateTables has node create the session table sessionTab (erlmcp's
// layout) and the hybrid's phase table as disc_copies on nodes. A table of
// that name with another layout is an *erl.RPCError with reason
// not_session_table. Reply: {ok, [{Tab, created | exists}]}.
func (s Migrate) CreateTables(ctx context.Context, node string, nodes []string, sessionTab string) ([]TableState, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "create_tables", atoms(nodes), etf.Atom(sessionTab))
	if err != nil {
		return nil, err
	}
	return decodeCreateTables(m, node, t)
}

func decodeCreateTables(m module, node string, t etf.Tuple) ([]TableState, error) {
	l, ok := migOkList(m, t)
	if !ok {
		return nil, m.shape(node, "create_tables", t)
	}
	var out []TableState
	for _, x := range l {
		xt, ok := x.(etf.Tuple)
		if !ok || len(xt) != 2 {
			return nil, m.shape(node, "create_tables", t)
		}
		tab, ok1 := migText(xt[0])
		st, ok2 := migText(xt[1])
		if !ok1 || !ok2 {
			return nil, m.shape(node, "create_tables", t)
		}
		out = append(out, TableState{Table: tab, State: st})
	}
	return out, nil
}

// DetsFile is a DETS file open on a node.
type DetsFile struct {
	Table string
	File  string // path on the node
	Bytes int64
}

// DetsFiles lists every DETS file open on node, each synced first so that
// the copy on disk is complete. Reply: {ok, [{Table, FileBinary, Bytes}]}.
func (s Migrate) DetsFiles(ctx context.Context, node string) ([]DetsFile, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "dets_files")
	if err != nil {
		return nil, err
	}
	return decodeDetsFiles(m, node, t)
}

func decodeDetsFiles(m module, node string, t etf.Tuple) ([]DetsFile, error) {
	l, ok := migOkList(m, t)
	if !ok {
		return nil, m.shape(node, "dets_files", t)
	}
	var out []DetsFile
	for _, x := range l {
		xt, ok := x.(etf.Tuple)
		if !ok || len(xt) != 3 || !migIsInt(xt[2]) {
			return nil, m.shape(node, "dets_files", t)
		}
		tab, ok1 := migText(xt[0])
		file, ok2 := xt[1].([]byte)
		if !ok1 || !ok2 {
			return nil, m.shape(node, "dets_files", t)
		}
		out = append(out, DetsFile{Table: tab, File: string(file), Bytes: asInt(xt[2])})
	}
	return out, nil
}

// ReadChunk reads up to n bytes of file on node from off; fewer than n:
// the end of the file. Reply: {ok, Binary}.
func (s Migrate) ReadChunk(ctx context.Context, node, file string, off int64, n int) ([]byte, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "read_chunk", []byte(file), off, n)
	if err != nil {
		return nil, err
	}
	return migOkBinary(m, node, "read_chunk", t)
}

func migOkBinary(m module, node, fun string, t etf.Tuple) ([]byte, error) {
	if m.okN(node, fun, t, 1) != nil {
		return nil, m.shape(node, fun, t)
	}
	b, ok := t[1].([]byte)
	if !ok {
		return nil, m.shape(node, fun, t)
	}
	return b, nil
}

// migOkList reads {ok, List}.
func migOkList(m module, t etf.Tuple) (etf.List, bool) {
	if m.okN("", "", t, 1) != nil {
		return nil, false
	}
	l, ok := t[1].(etf.List)
	return l, ok
}

// PersistWatchOn begins the hybrid's persistence watch on node under
// token (a value the caller chose) for ttl: every session id the
// application touches from now on is recorded in a file a restart keeps.
// A hybrid without the watch is an *erl.RPCError with reason
// hybrid_without_watch. Reply: {ok, File}.
func (s Migrate) PersistWatchOn(ctx context.Context, node, token string, ttl time.Duration) error {
	_, err := s.mod().call(ctx, node, "persist_watch", etf.Atom("on"), []byte(token), ttl.Milliseconds())
	return err
}

// PersistWatchOff ends the watch begun under token (another token's watch
// is left alone). Reply: {ok, Stopped}.
func (s Migrate) PersistWatchOff(ctx context.Context, node, token string) error {
	_, err := s.mod().call(ctx, node, "persist_watch", etf.Atom("off"), []byte(token), 0)
	return err
}

// PersistDigest is one session of a persistence snapshot.
type PersistDigest struct {
	Digest uint64
	// ExpiresAt is last_accessed + timeout_ms (ms), 0 for never.
	ExpiresAt int64
}

// PersistSnapshot is one digest per session of a DETS table.
type PersistSnapshot struct {
	// Rows is keyed by the session's key: a kind byte (0: the id is a
	// binary, 1: term_to_binary of another id) and the id's bytes.
	Rows map[string]PersistDigest
	// At is the node's time (ms) when it was taken.
	At int64
}

// Snapshot methods (the how of persist_snapshot/3).
const (
	SnapshotDoor   = "door"   // keys listed in one turn of the store server
	SnapshotDirect = "direct" // a traversal alone, exact only if nothing writes
)

// PersistSnapshot reads one digest per session of node's DETS table tab
// (how: SnapshotDoor or SnapshotDirect), the node waiting at most timeout.
// Reply: {ok, Frames, Count, NodeNowMs}, Frames
// <<Kind:8, Len:32, Id:Len/binary, Digest:64, ExpiresAt:64>>*.
func (s Migrate) PersistSnapshot(ctx context.Context, node, tab, how string, timeout time.Duration) (PersistSnapshot, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "persist_snapshot", etf.Atom(tab), etf.Atom(how), timeout.Milliseconds())
	if err != nil {
		return PersistSnapshot{}, err
	}
	return decodePersistSnapshot(m, node, t)
}

func decodePersistSnapshot(m module, node string, t etf.Tuple) (PersistSnapshot, error) {
	const fun = "persist_snapshot"
	if m.okN(node, fun, t, 3) != nil || !migIsInt(t[2]) || !migIsInt(t[3]) {
		return PersistSnapshot{}, m.shape(node, fun, t)
	}
	b, ok := t[1].([]byte)
	if !ok {
		return PersistSnapshot{}, m.shape(node, fun, t)
	}
	out := PersistSnapshot{Rows: make(map[string]PersistDigest, max(0, asInt(t[2]))), At: asInt(t[3])}
	for len(b) > 0 {
		id, rest, ok := migPersistID(b)
		if !ok || len(rest) < 16 {
			return PersistSnapshot{}, m.shape(node, fun, "truncated frame")
		}
		out.Rows[id] = PersistDigest{Digest: binary.BigEndian.Uint64(rest), ExpiresAt: int64(binary.BigEndian.Uint64(rest[8:]))}
		b = rest[16:]
	}
	return out, nil
}

// migPersistID splits <<Kind:8, Len:32, Id:Len/binary>> off b; the key is the
// kind byte and the id.
func migPersistID(b []byte) (id string, rest []byte, ok bool) {
	if len(b) < 5 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint32(b[1:]))
	if len(b) < 5+n {
		return "", nil, false
	}
	return string(b[:1]) + string(b[5:5+n]), b[5+n:], true
}

// PersistTouched is what a persistence watch recorded.
type PersistTouched struct {
	// On: the watch still runs; Why (when not) is why it ended: expired,
	// failed, replaced, off, or none (no watch since the node started).
	On  bool
	Why string
	// IDs are the keys (as in PersistSnapshot) of every session touched
	// since the watch began.
	IDs map[string]bool
	// Cleanup: the store's expiry cleanup deleted sessions meanwhile;
	// Unclean: the watch's file was repaired after a kill (ids of the last
	// seconds may be missing); Resumed: the store server's init reopened
	// the watch (it restarted).
	Cleanup, Unclean, Resumed bool
}

// PersistTouched reads the watch begun under token on node, the node
// waiting at most timeout.
// Reply: {ok, on, IdFrames, Count, Cleanup, Unclean, Resumed} |
// {ok, off, Why}, IdFrames <<Kind:8, Len:32, Id:Len/binary>>*.
func (s Migrate) PersistTouched(ctx context.Context, node, token string, timeout time.Duration) (PersistTouched, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "persist_touched", []byte(token), timeout.Milliseconds())
	if err != nil {
		return PersistTouched{}, err
	}
	return decodePersistTouched(m, node, t)
}

func decodePersistTouched(m module, node string, t etf.Tuple) (PersistTouched, error) {
	const fun = "persist_touched"
	bad := func() (PersistTouched, error) { return PersistTouched{}, m.shape(node, fun, t) }
	if m.okN(node, fun, t, 2) == nil && t[1] == etf.Atom("off") {
		why, ok := migText(t[2])
		if !ok {
			return bad()
		}
		return PersistTouched{Why: why}, nil
	}
	if m.okN(node, fun, t, 6) != nil || t[1] != etf.Atom("on") || !migIsInt(t[3]) {
		return bad()
	}
	b, ok := t[2].([]byte)
	out := PersistTouched{On: true, IDs: make(map[string]bool, max(0, asInt(t[3])))}
	var ok4, ok5, ok6 bool
	out.Cleanup, ok4 = t[4].(bool)
	out.Unclean, ok5 = t[5].(bool)
	out.Resumed, ok6 = t[6].(bool)
	if !ok || !ok4 || !ok5 || !ok6 {
		return bad()
	}
	for len(b) > 0 {
		id, rest, ok := migPersistID(b)
		if !ok {
			return PersistTouched{}, m.shape(node, fun, "truncated frame")
		}
		out.IDs[id] = true
		b = rest
	}
	return out, nil
}

// NativeCopy is the backfill benchmark's reference: node copies its DETS
// table dets into the Mnesia table mnesia with a plain loop (dets:select
// chunks of batch, one transaction per chunk, written when absent or
// newer). Reply: {ok, Rows, Micros}.
func (s Migrate) NativeCopy(ctx context.Context, node, dets, mnesia string, batch int) (rows int64, took time.Duration, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "native_copy", etf.Atom(dets), etf.Atom(mnesia), batch)
	if err != nil {
		return 0, 0, err
	}
	return decodeNativeCopy(m, node, t)
}

func decodeNativeCopy(m module, node string, t etf.Tuple) (int64, time.Duration, error) {
	if m.okN(node, "native_copy", t, 2) != nil || !migIsInt(t[1]) || !migIsInt(t[2]) {
		return 0, 0, m.shape(node, "native_copy", t)
	}
	return asInt(t[1]), time.Duration(asInt(t[2])) * time.Microsecond, nil
}

// OpLatency is one operation's latencies in BenchLatency, in microseconds.
type OpLatency struct {
	Name     string // hybrid_store, hybrid_fetch, primary_store, ...
	P50, P99 float64
}

// BenchLatency has node time n stores and fetches of each kind through
// the hybrid backend, its primary alone and both writes by hand (the node
// must run the hybrid DETS -> Mnesia at phase1).
// Reply: {ok, [{Name, P50us, P99us}]}.
func (s Migrate) BenchLatency(ctx context.Context, node string, n int) ([]OpLatency, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "bench_latency", n)
	if err != nil {
		return nil, err
	}
	return decodeBenchLatency(m, node, t)
}

func decodeBenchLatency(m module, node string, t etf.Tuple) ([]OpLatency, error) {
	l, ok := migOkList(m, t)
	if !ok {
		return nil, m.shape(node, "bench_latency", t)
	}
	out := make([]OpLatency, 0, len(l))
	for _, x := range l {
		xt, ok := x.(etf.Tuple)
		if !ok || len(xt) != 3 {
			return nil, m.shape(node, "bench_latency", t)
		}
		name, ok1 := migText(xt[0])
		p50, ok2 := migFloat(xt[1])
		p99, ok3 := migFloat(xt[2])
		if !ok1 || !ok2 || !ok3 {
			return nil, m.shape(node, "bench_latency", t)
		}
		out = append(out, OpLatency{Name: name, P50: p50, P99: p99})
	}
	return out, nil
}
