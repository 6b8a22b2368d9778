package agentapi

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Agent is the stub of migctl_agent (erlang/agent/migctl_agent.erl), the
// node-side half of package backends: describing a store, counting it,
// reading and writing sessions (as framed term_to_binary blobs, never as
// decoded terms), streaming it (store.go), and the compare-and-set writes
// and phase2 routing a phase-aware repair uses (repair.go).
type Agent struct{ C *erl.Client }

func (s Agent) mod() module { return module{c: s.C, name: "migctl_agent"} }

// StoreInfo is what describe/2 says of a store.
type StoreInfo struct {
	Exists bool
	Size   int64
	// Layout is "ok" when the table holds erlmcp sessions (or is empty),
	// else the reason it does not (an atom as Erlang prints it).
	Layout  string
	Storage string   // Mnesia storage type on the node
	Copies  []string // Mnesia replicas
	File    string   // DETS file
}

// Describe is migctl_agent:describe/2. Reply {ok, Props}, Props a list of
// {exists, Bool} | {size, N} | {layout, ok | Reason} | {storage, Type} |
// {file, Binary} | {copies, [Binary]} (other keys are passed over: a
// newer agent may say more).
func (s Agent) Describe(ctx context.Context, node string, st Store) (StoreInfo, error) {
	const fun = "describe"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), s.C.Self())
	if err != nil {
		return StoreInfo{}, err
	}
	return m.describeReply(node, t)
}

func (m module) describeReply(node string, t etf.Tuple) (StoreInfo, error) {
	const fun = "describe"
	if err := m.okN(node, fun, t, 1); err != nil {
		return StoreInfo{}, err
	}
	props, ok := t[1].(etf.List)
	if !ok {
		return StoreInfo{}, m.shape(node, fun, t)
	}
	var info StoreInfo
	for _, p := range props {
		pt, ok := p.(etf.Tuple)
		if !ok || len(pt) != 2 {
			return StoreInfo{}, m.shape(node, fun, t)
		}
		switch pt[0] {
		case etf.Atom("exists"):
			if info.Exists, ok = pt[1].(bool); !ok {
				return StoreInfo{}, m.shape(node, fun, t)
			}
		case etf.Atom("size"):
			if !isInt(pt[1]) {
				return StoreInfo{}, m.shape(node, fun, t)
			}
			info.Size = asInt(pt[1])
		case etf.Atom("layout"):
			info.Layout = fmt.Sprint(pt[1])
		case etf.Atom("storage"):
			info.Storage = fmt.Sprint(pt[1])
		case etf.Atom("file"):
			info.File = string(asBytes(pt[1]))
		case etf.Atom("copies"):
			l, ok := pt[1].(etf.List)
			if !ok {
				return StoreInfo{}, m.shape(node, fun, t)
			}
			for _, x := range l {
				info.Copies = append(info.Copies, string(asBytes(x)))
			}
		}
	}
	return info, nil
}

// Count is migctl_agent:count/1, the store's row count. Reply {ok, N}.
func (s Agent) Count(ctx context.Context, node string, st Store) (int64, error) {
	const fun = "count"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C))
	if err != nil {
		return 0, err
	}
	return m.intsReply(node, fun, t, 1)
}

// intsReply reads {ok, I1, ..., In} (integers) and returns I1.
func (m module) intsReply(node, fun string, t etf.Tuple, n int) (int64, error) {
	if err := m.okN(node, fun, t, n); err != nil {
		return 0, err
	}
	for _, x := range t[1:] {
		if !isInt(x) {
			return 0, m.shape(node, fun, t)
		}
	}
	return asInt(t[1]), nil
}

// Get is migctl_agent:get/2: one session's term_to_binary blob, read
// without touching it; ok false when st does not hold id.
// Reply {ok, Blob} | {ok, not_found}.
func (s Agent) Get(ctx context.Context, node string, st Store, id []byte) (blob []byte, ok bool, err error) {
	const fun = "get"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), id)
	if err != nil {
		return nil, false, err
	}
	return m.getReply(node, t)
}

func (m module) getReply(node string, t etf.Tuple) ([]byte, bool, error) {
	const fun = "get"
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, false, err
	}
	switch v := t[1].(type) {
	case []byte:
		return v, true, nil
	case etf.Atom:
		if v == "not_found" {
			return nil, false, nil
		}
	}
	return nil, false, m.shape(node, fun, t)
}

// Put is migctl_agent:put/3: write framed rows
// (<<IdLen:32, Id, BlobLen:32, Blob>>*) in mode (overwrite, if_absent or
// if_newer). Reply {ok, Written, Skipped}.
func (s Agent) Put(ctx context.Context, node string, st Store, frames []byte, mode string) (written, skipped int, err error) {
	const fun = "put"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), frames, etf.Atom(mode))
	if err != nil {
		return 0, 0, err
	}
	if _, err := m.intsReply(node, fun, t, 2); err != nil {
		return 0, 0, err
	}
	return int(asInt(t[1])), int(asInt(t[2])), nil
}

// Delete is migctl_agent:delete/2: remove ids (absent ones are no
// error). Reply {ok, N}, N the number of ids asked for.
func (s Agent) Delete(ctx context.Context, node string, st Store, ids [][]byte) (int, error) {
	const fun = "delete"
	var buf []byte
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(id)))
		buf = append(buf, id...)
	}
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), buf)
	if err != nil {
		return 0, err
	}
	n, err := m.intsReply(node, fun, t, 1)
	return int(n), err
}

// DetsRelease is migctl_agent:dets_release/1: close the DETS table an
// owner process of migctl's holds open on node (nothing when none does).
// Reply {ok, closed} | {ok, not_owned}.
func (s Agent) DetsRelease(ctx context.Context, node, table string) error {
	const fun = "dets_release"
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(table))
	if err != nil {
		return err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return err
	}
	if a := asAtom(t[1]); a != "closed" && a != "not_owned" {
		return m.shape(node, fun, t)
	}
	return nil
}

// Node reads what migctl needs of a node from OTP itself (plain rpc to
// erlang and mnesia, no agent module): the release `migctl ping' shows,
// whether Mnesia runs, and the load the monitor backs off on.
type Node struct{ C *erl.Client }

func (s Node) mod(name string) module { return module{c: s.C, name: name} }

// rpc is mod:fun(arg) on node (the reply is the bare value, not {ok, ...}).
func (s Node) rpc(ctx context.Context, node, mod, fun, arg string) (etf.Term, error) {
	return s.C.Call(ctx, node, mod, fun, etf.Atom(arg))
}

// OTPRelease is erlang:system_info(otp_release), a charlist ("27").
func (s Node) OTPRelease(ctx context.Context, node string) (string, error) {
	t, err := s.rpc(ctx, node, "erlang", "system_info", "otp_release")
	if err != nil {
		return "", err
	}
	return s.mod("erlang").releaseReply(node, t)
}

func (m module) releaseReply(node string, t etf.Term) (string, error) {
	switch v := t.(type) {
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	}
	return "", m.shape(node, "system_info", t)
}

// Connected is erlang:nodes(): the nodes node is connected to (visible
// ones; migctl's hidden node is not among them).
func (s Node) Connected(ctx context.Context, node string) ([]string, error) {
	t, err := s.C.Call(ctx, node, "erlang", "nodes")
	if err != nil {
		return nil, err
	}
	l, err := atomStrings(t)
	if err != nil {
		return nil, s.mod("erlang").shape(node, "nodes", t)
	}
	return l, nil
}

// MnesiaRunning is mnesia:system_info(is_running) =:= yes (the reply is
// yes | no | starting | stopping).
func (s Node) MnesiaRunning(ctx context.Context, node string) (bool, error) {
	t, err := s.rpc(ctx, node, "mnesia", "system_info", "is_running")
	if err != nil {
		return false, err
	}
	a, ok := t.(etf.Atom)
	if !ok {
		return false, s.mod("mnesia").shape(node, "system_info", t)
	}
	return a == "yes", nil
}

// Load is the node's run queue (erlang:statistics(total_run_queue_lengths),
// an integer) and its schedulers online (erlang:system_info(schedulers_online)).
func (s Node) Load(ctx context.Context, node string) (runQueue, schedulers int64, err error) {
	m := s.mod("erlang")
	rq, err := s.rpc(ctx, node, "erlang", "statistics", "total_run_queue_lengths")
	if err != nil {
		return 0, 0, err
	}
	if !isInt(rq) {
		return 0, 0, m.shape(node, "statistics", rq)
	}
	sc, err := s.rpc(ctx, node, "erlang", "system_info", "schedulers_online")
	if err != nil {
		return 0, 0, err
	}
	if !isInt(sc) {
		return 0, 0, m.shape(node, "system_info", sc)
	}
	return asInt(rq), asInt(sc), nil
}
