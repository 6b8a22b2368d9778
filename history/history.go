package history

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/erlmcp/migctl/term"
)

// Kind is what an operation did to its key.
type Kind uint8

const (
	Store Kind = iota + 1
	Fetch
	Delete
)

func (k Kind) String() string {
	switch k {
	case Store:
		return "store"
	case Fetch:
		return "fetch"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Outcome is how an operation ended for the client.
type Outcome uint8

const (
	OK Outcome = iota + 1
	NotFound
	Error   // failed: a store or delete may or may not have happened
	Timeout // as Error
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case NotFound:
		return "not_found"
	case Error:
		return "error"
	case Timeout:
		return "timeout"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Failed says whether the client got no answer it can rely on.
func (o Outcome) Failed() bool { return o == Error || o == Timeout }

// Op is one client operation.
type Op struct {
	Node   string // the node whose client issued it
	Client int    // the worker on that node; 0 is the load generator's final read
	Kind   Kind
	Key    string
	// Digest of the value stored, or read (Fetch with OK); 0 otherwise.
	Digest uint32
	// Call and Return are the node's Erlang system time in nanoseconds.
	Call, Return int64
	Outcome      Outcome
}

// Value is what the operation wrote or read: "absent" for a delete or a
// miss, the digest in hex otherwise.
func (o Op) Value() string {
	if o.Kind == Delete || o.Outcome == NotFound {
		return "absent"
	}
	return fmt.Sprintf("%08x", o.Digest)
}

func (o Op) String() string {
	s := fmt.Sprintf("%s/%d %s %s", o.Node, o.Client, o.Kind, o.Key)
	switch {
	case o.Kind == Fetch && o.Outcome == OK:
		s += " -> " + o.Value()
	case o.Kind == Fetch:
		s += " -> " + o.Outcome.String()
	case o.Kind == Store:
		s += " " + o.Value() + " -> " + o.Outcome.String()
	default:
		s += " -> " + o.Outcome.String()
	}
	return s
}

// NodeInfo is the header of one node's history.
type NodeInfo struct {
	Node         string
	Name         string // the load generator's name
	Shared       bool   // shared-sessions mode
	Workers      int
	TimeOffsetNs int64
	// ClockSkewNs is the node's Erlang system time minus its OS time when
	// the history was taken: how far its clock has drifted from the host's
	// since boot (no_time_warp fixes the offset at boot).
	ClockSkewNs int64
}

// History is the operations of one or more nodes.
type History struct {
	Nodes []NodeInfo
	Ops   []Op
}

// ErrFormat is returned for a blob that is not a load generator history.
var ErrFormat = errors.New("history: not a load generator history")

// Decode reads one node's history, the binary erlmcp_loadgen:history/1,2
// returns: term_to_binary({migctl_history, 1, Header, Ops}).
func Decode(blob []byte) (*History, error) {
	t, err := term.Decode(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	tup, ok := t.(term.Tuple)
	if !ok || len(tup) != 4 || tup[0] != term.Atom("migctl_history") {
		return nil, fmt.Errorf("%w: not a {migctl_history, ...} tuple", ErrFormat)
	}
	if v, _ := tup[1].(int64); v != 1 {
		return nil, fmt.Errorf("%w: version %v", ErrFormat, tup[1])
	}
	hdr, ok := tup[2].(term.Map)
	if !ok {
		return nil, fmt.Errorf("%w: header is not a map", ErrFormat)
	}
	get := func(k string) term.Term {
		for _, p := range hdr {
			if p.Key == term.Atom(k) {
				return p.Value
			}
		}
		return nil
	}
	if m := get("time_warp_mode"); m != term.Atom("no_time_warp") {
		// With multi_time_warp the offset moves: Monotonic + the offset
		// at the end is not the time an operation happened.
		return nil, fmt.Errorf("%w: node's time_warp_mode is %v, need no_time_warp", ErrFormat, m)
	}
	ni := NodeInfo{Node: atomText(get("node")), Name: text(get("name")), Shared: get("shared") == term.Atom("true")}
	ni.Workers = int(asInt(get("workers")))
	ni.TimeOffsetNs = asInt(get("time_offset_ns"))
	ni.ClockSkewNs = asInt(get("system_time_ns")) - asInt(get("os_system_time_ns"))
	if ni.Node == "" {
		return nil, fmt.Errorf("%w: header has no node", ErrFormat)
	}
	h := &History{Nodes: []NodeInfo{ni}}
	var elems []term.Term
	switch l := tup[3].(type) {
	case term.List:
		elems = l.Elems
	case term.Nil:
	default:
		return nil, fmt.Errorf("%w: operations are not a list", ErrFormat)
	}
	h.Ops = make([]Op, 0, len(elems))
	for i, e := range elems {
		op, err := decodeOp(e, ni)
		if err != nil {
			return nil, fmt.Errorf("%w: operation %d: %v", ErrFormat, i, err)
		}
		h.Ops = append(h.Ops, op)
	}
	return h, nil
}

func decodeOp(e term.Term, ni NodeInfo) (Op, error) {
	t, ok := e.(term.Tuple)
	if !ok || len(t) != 7 {
		return Op{}, fmt.Errorf("not a 7-tuple: %v", term.Format(e))
	}
	op := Op{Node: ni.Node, Client: int(asInt(t[0])), Key: text(t[2]),
		Digest: uint32(asInt(t[3])),
		Call:   asInt(t[4]) + ni.TimeOffsetNs, Return: asInt(t[5]) + ni.TimeOffsetNs}
	switch t[1] {
	case term.Atom("store"):
		op.Kind = Store
	case term.Atom("fetch"):
		op.Kind = Fetch
	case term.Atom("delete"):
		op.Kind = Delete
	default:
		return Op{}, fmt.Errorf("kind %v", t[1])
	}
	switch t[6] {
	case term.Atom("ok"):
		op.Outcome = OK
	case term.Atom("not_found"):
		op.Outcome = NotFound
	case term.Atom("error"):
		op.Outcome = Error
	case term.Atom("timeout"):
		op.Outcome = Timeout
	default:
		return Op{}, fmt.Errorf("outcome %v", t[6])
	}
	if op.Return < op.Call {
		return Op{}, fmt.Errorf("returns before its call")
	}
	return op, nil
}

func asInt(t term.Term) int64 {
	switch v := t.(type) {
	case int64:
		return v
	case int:
		return int64(v)
	}
	return 0
}

func atomText(t term.Term) string {
	if a, ok := t.(term.Atom); ok {
		return string(a)
	}
	return ""
}

func text(t term.Term) string {
	switch v := t.(type) {
	case term.Binary:
		return string(v)
	case term.Atom:
		return string(v)
	case term.String:
		return string(v)
	}
	return term.Format(t)
}

// Merge puts histories together, operations ordered by call time.
func Merge(hs ...*History) *History {
	out := &History{}
	for _, h := range hs {
		if h == nil {
			continue
		}
		out.Nodes = append(out.Nodes, h.Nodes...)
		out.Ops = append(out.Ops, h.Ops...)
	}
	sort.SliceStable(out.Ops, func(i, j int) bool { return out.Ops[i].Call < out.Ops[j].Call })
	return out
}

// ReadFiles decodes and merges history files (blobs as written by
// WriteFile or fetched from the nodes).
func ReadFiles(paths ...string) (*History, error) {
	var hs []*History
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		h, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("read history %s: %w", p, err)
		}
		hs = append(hs, h)
	}
	return Merge(hs...), nil
}

// WriteFile saves one node's blob under dir as <node>.history.etf and
// returns the path.
func WriteFile(dir, node string, blob []byte) (string, error) {
	p := filepath.Join(dir, safeName(node)+".history.etf")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		return "", fmt.Errorf("write history: %w", err)
	}
	return p, nil
}

// safeName keeps letters, digits, '-', '_' and '.', so a node name or a
// session id can be a file name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			b[i] = '_'
		}
	}
	if len(b) > 120 {
		b = b[:120]
	}
	return string(b)
}
