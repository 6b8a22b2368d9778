package agentapi

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Cluster is the stub of migctl_cluster (erlang/agent/migctl_cluster.erl),
// the node-side half of package cluster; every function of the module but
// version/0 (which Go does not call) has a method here. This file holds
// the heal's own (the change records, the fence, the rows and the merge);
// clusterstatus.go holds those of Status, Watch and the membership changes
// (the view, join and removal, the event forwarder, connect, the reload)
// and recorder.go the change recorders' coverage. Package cluster calls
// the module only through them.
type Cluster struct{ C *erl.Client }

func (s Cluster) mod() module { return module{c: s.C, name: "migctl_cluster"} }

// Row is one session row: its id and the term_to_binary of the session.
type Row struct {
	ID   []byte
	Blob []byte
}

// Recorded change ops, as Change.Op.
const (
	OpWrite  byte = 1
	OpDelete byte = 2
)

// Change is one key's last change in a node's change recorder.
type Change struct {
	Op     byte   // OpWrite or OpDelete
	At     int64  // ms, the recording node's clock
	AtUs   int64  // the same time in µs (a recorder older than lookup_us/2: At × 1000)
	Digest uint32 // of the row written; 0 for a delete
	Origin string // node of the process that made it
}

// MergeCond is the condition under which a merged change still applies
// (see migctl_cluster:merge/3).
type MergeCond struct {
	// Evidence: decided from the change records. The change applies only
	// while the row's digest is WinnerDigest (0: absent) and the node's
	// recorder has no change of the key after WinnerSeenUs (µs, as
	// Change.AtUs; 0: it had none; -1: not read, the digest alone
	// decides). Otherwise (inference) by last_accessed and write time.
	Evidence     bool
	WinnerDigest uint32
	WinnerSeenUs int64
}

// MergeWrite is a loser's row to write.
type MergeWrite struct {
	ID, Blob []byte
	Cond     MergeCond
}

// MergeDelete is a loser's deletion to apply; Before is the write time
// (ms) at or after which an inferred deletion does not apply.
type MergeDelete struct {
	ID     []byte
	Before int64
	Cond   MergeCond
}

// MergeResult is what one merge transaction did.
type MergeResult struct {
	Written, Skipped, Deleted, Kept int
	// WinnerChanged: changes on evidence not applied because the node
	// changed the key after the decision; their ids.
	WinnerChanged    int
	WinnerChangedIDs []string
}

func (c MergeCond) frame(b []byte) []byte {
	if !c.Evidence {
		return append(b, make([]byte, 1+4+8)...)
	}
	b = binary.BigEndian.AppendUint32(append(b, 1), c.WinnerDigest)
	return binary.BigEndian.AppendUint64(b, uint64(c.WinnerSeenUs))
}

// Merge applies writes and deletes to tab on node in one transaction,
// each under its condition.
//
//	migctl_cluster:merge(Tab, Writes, Deletes) ->
//	    {ok, Written, Skipped, Deleted, Kept, WinnerChanged, <<Len:32, Id>>*}
func (s Cluster) Merge(ctx context.Context, node, tab string, writes []MergeWrite, deletes []MergeDelete) (MergeResult, error) {
	const fun = "merge"
	wb, db := []byte{}, []byte{}
	for _, w := range writes {
		wb = binary.BigEndian.AppendUint32(wb, uint32(len(w.ID)))
		wb = append(wb, w.ID...)
		wb = binary.BigEndian.AppendUint32(wb, uint32(len(w.Blob)))
		wb = append(wb, w.Blob...)
		wb = w.Cond.frame(wb)
	}
	for _, d := range deletes {
		db = binary.BigEndian.AppendUint32(db, uint32(len(d.ID)))
		db = append(db, d.ID...)
		db = binary.BigEndian.AppendUint64(db, uint64(d.Before))
		db = d.Cond.frame(db)
	}
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(tab), wb, db)
	if err != nil {
		return MergeResult{}, err
	}
	if err := m.okN(node, fun, t, 6); err != nil {
		return MergeResult{}, err
	}
	ids, ok := idFrames(t[6])
	if !ok {
		return MergeResult{}, m.shape(node, fun, t)
	}
	return MergeResult{Written: int(asInt(t[1])), Skipped: int(asInt(t[2])), Deleted: int(asInt(t[3])), Kept: int(asInt(t[4])),
		WinnerChanged: int(asInt(t[5])), WinnerChangedIDs: ids}, nil
}

// Changes reads node's recorded last change of each of ids in tab; ids
// without one are left out.
//
//	migctl_cluster:changes(Tab, <<Len:32, Id>>*) ->
//	    {ok, <<Len:32, Id, Op:8, Micros:64, Digest:32, OLen:16, Origin>>*}
func (s Cluster) Changes(ctx context.Context, node, tab string, ids []string) (map[string]Change, error) {
	const fun = "changes"
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(tab), idsFrame(ids))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	b, ok := t[1].([]byte)
	if !ok {
		return nil, m.shape(node, fun, t)
	}
	out := map[string]Change{}
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, m.shape(node, fun, "truncated frame")
		}
		n := int(binary.BigEndian.Uint32(b))
		if len(b) < 4+n+15 {
			return nil, m.shape(node, fun, "truncated frame")
		}
		id := string(b[4 : 4+n])
		r := b[4+n:]
		us := int64(binary.BigEndian.Uint64(r[1:]))
		c := Change{Op: r[0], At: MsOfUs(us), AtUs: us, Digest: binary.BigEndian.Uint32(r[9:])}
		on := int(binary.BigEndian.Uint16(r[13:]))
		if len(r) < 15+on {
			return nil, m.shape(node, fun, "truncated frame")
		}
		c.Origin = string(r[15 : 15+on])
		out[id] = c
		b = r[15+on:]
	}
	return out, nil
}

// ChangedSince lists the keys of tab whose last change node recorded is at
// or after since (ms). known is false when its recorder does not cover
// tab back to since (the caller must read in full).
//
//	migctl_cluster:changed_since(Tab, Millis) -> {ok, <<Len:32, Id>>*} | {ok, unknown}
func (s Cluster) ChangedSince(ctx context.Context, node, tab string, since int64) (ids []string, known bool, err error) {
	const fun = "changed_since"
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(tab), since)
	if err != nil {
		return nil, false, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, false, err
	}
	if t[1] == etf.Atom("unknown") {
		return nil, false, nil
	}
	ids, ok := idFrames(t[1])
	if !ok {
		return nil, false, m.shape(node, fun, t)
	}
	return ids, true, nil
}

// GetRows reads node's local rows of ids in tab; absent ids are left out.
//
//	migctl_cluster:get_rows(Tab, <<Len:32, Id>>*) -> {ok, <<IdLen:32, Id, BlobLen:32, Blob>>*}
func (s Cluster) GetRows(ctx context.Context, node, tab string, ids []string) ([]Row, error) {
	const fun = "get_rows"
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(tab), idsFrame(ids))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	b, ok := t[1].([]byte)
	if !ok {
		return nil, m.shape(node, fun, t)
	}
	var rows []Row
	for len(b) > 0 {
		var id, blob []byte
		if id, b, ok = frame(b); ok {
			blob, b, ok = frame(b)
		}
		if !ok {
			return nil, m.shape(node, fun, "truncated frame")
		}
		rows = append(rows, Row{ID: id, Blob: blob})
	}
	return rows, nil
}

// Fence holds a write lock on tabs in node's island until node's Mnesia
// stops, Unfence, the migctl node owner goes away, or timeoutMs pass.
// running is false when Mnesia is not running on node (nothing held).
//
//	migctl_cluster:fence(Tabs, Owner, Timeout) -> {ok, fenced} | {ok, not_running}
func (s Cluster) Fence(ctx context.Context, node string, tabs []string, owner string, timeoutMs int64) (running bool, err error) {
	const fun = "fence"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(tabs), etf.Atom(owner), int(timeoutMs))
	if err != nil {
		return false, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return false, err
	}
	switch asAtom(t[1]) {
	case "fenced":
		return true, nil
	case "not_running":
		return false, nil
	}
	return false, m.shape(node, fun, t)
}

// Unfence ends node's fence, if any.
//
//	migctl_cluster:unfence() -> {ok, released | none}
func (s Cluster) Unfence(ctx context.Context, node string) error {
	m := s.mod()
	t, err := m.call(ctx, node, "unfence")
	if err != nil {
		return err
	}
	return m.okN(node, "unfence", t, 1)
}

// FenceFlag tells node's dirty writers to take locks for d from now, by
// node's own clock (migctl's need not agree with it); 0 clears it.
//
//	migctl_cluster:fence_flag({for, Ms} | 0) -> {ok, set | cleared}
func (s Cluster) FenceFlag(ctx context.Context, node string, d time.Duration) error {
	m := s.mod()
	var arg any = 0
	if d > 0 {
		arg = etf.Tuple{etf.Atom("for"), max(int64(1), d.Milliseconds())}
	}
	t, err := m.call(ctx, node, "fence_flag", arg)
	if err != nil {
		return err
	}
	return m.okN(node, "fence_flag", t, 1)
}

// Clock reads node's erlang:system_time(millisecond): the clock its change
// recorder stamps changes with, so the one to ask ChangedSince about.
//
//	migctl_cluster:clock() -> {ok, Millis}
func (s Cluster) Clock(ctx context.Context, node string) (int64, error) {
	const fun = "clock"
	m := s.mod()
	t, err := m.call(ctx, node, fun)
	if err != nil {
		return 0, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return 0, err
	}
	ms := asInt(t[1])
	if ms <= 0 {
		return 0, m.shape(node, fun, t)
	}
	return ms, nil
}

// FenceHeld says whether node's fence still holds its lock on every
// table of tabs.
//
//	migctl_cluster:fence_held(Tabs) -> {ok, true | false}
func (s Cluster) FenceHeld(ctx context.Context, node string, tabs []string) (bool, error) {
	const fun = "fence_held"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(tabs))
	if err != nil {
		return false, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return false, err
	}
	switch v := t[1].(type) {
	case bool:
		return v, nil
	case etf.Atom:
		return v == "true", nil
	}
	return false, m.shape(node, fun, t)
}

// Down is one node's record of when Mnesia on a peer went down.
type Down struct {
	Peer       string
	Millis     int64 // ms since the epoch
	Resolution int64 // ms: 1 (seen by a watch forwarder) or 1000 (Mnesia's own record)
}

// Downs reads when node last saw Mnesia on each of peers go down; peers
// without a record are left out.
//
//	migctl_cluster:downs(Peers) -> {ok, [{Peer, Millis, ResolutionMillis}]}
func (s Cluster) Downs(ctx context.Context, node string, peers []string) ([]Down, error) {
	const fun = "downs"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(peers))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	var out []Down
	for _, x := range asList(t[1]) {
		r, ok := x.(etf.Tuple)
		if !ok || len(r) != 3 {
			return nil, m.shape(node, fun, t)
		}
		out = append(out, Down{Peer: fmt.Sprint(r[0]), Millis: asInt(r[1]), Resolution: asInt(r[2])})
	}
	return out, nil
}

// idsFrame frames ids as <<Len:32, Id>>*.
func idsFrame(ids []string) []byte {
	b := []byte{}
	for _, id := range ids {
		b = binary.BigEndian.AppendUint32(b, uint32(len(id)))
		b = append(b, id...)
	}
	return b
}

// idFrames reads <<Len:32, Id>>* frames.
func idFrames(x etf.Term) ([]string, bool) {
	b, ok := x.([]byte)
	if !ok {
		return nil, false
	}
	var out []string
	for len(b) > 0 {
		var id []byte
		if id, b, ok = frame(b); !ok {
			return nil, false
		}
		out = append(out, string(id))
	}
	return out, true
}

// frame splits one <<Len:32, Bytes>> off b (copied: ergo's buffers are
// reused).
func frame(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint32(b))
	if len(b) < 4+n {
		return nil, nil, false
	}
	return append([]byte(nil), b[4:4+n]...), b[4+n:], true
}

// MsOfUs is a time in µs in ms, rounded down (as Erlang's
// erlang:system_time(millisecond) is of its µs).
func MsOfUs(us int64) int64 {
	ms := us / 1000
	if us%1000 != 0 && us < 0 {
		ms--
	}
	return ms
}
