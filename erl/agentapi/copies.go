package agentapi

import (
	"context"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// TableCopy is one replica of a Mnesia table.
type TableCopy struct {
	Node    string
	Type    string // disc_copies, ram_copies or disc_only_copies
	Running bool   // Mnesia runs on Node
}

// TableCopies is migctl_migrate:table_copies/1: every replica of tab, as
// node sees the schema. A missing table is an *erl.RPCError with reason
// no_such_table. Reply: {ok, [{Node, Type, Running}]}.
func (s Migrate) TableCopies(ctx context.Context, node, tab string) ([]TableCopy, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "table_copies", etf.Atom(tab))
	if err != nil {
		return nil, err
	}
	return decodeTableCopies(m, node, t)
}

func decodeTableCopies(m module, node string, t etf.Tuple) ([]TableCopy, error) {
	l, ok := migOkList(m, t)
	if !ok {
		return nil, m.shape(node, "table_copies", t)
	}
	out := make([]TableCopy, 0, len(l))
	for _, x := range l {
		xt, ok := x.(etf.Tuple)
		if !ok || len(xt) != 3 {
			return nil, m.shape(node, "table_copies", t)
		}
		n, ok1 := migText(xt[0])
		ty, ok2 := migText(xt[1])
		up, ok3 := xt[2].(bool)
		if !ok1 || !ok2 || !ok3 {
			return nil, m.shape(node, "table_copies", t)
		}
		out = append(out, TableCopy{Node: n, Type: ty, Running: up})
	}
	return out, nil
}

// DropCopy is migctl_migrate:drop_copy/2, run on node: remove target's
// replica of tab (mnesia:del_table_copy). dropped is false when target
// had none. The last replica is never removed: an *erl.RPCError with
// reason last_copy. Reply: {ok, dropped | absent}.
func (s Migrate) DropCopy(ctx context.Context, node, tab, target string) (dropped bool, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "drop_copy", etf.Atom(tab), etf.Atom(target))
	if err != nil {
		return false, err
	}
	if m.okN(node, "drop_copy", t, 1) != nil || (t[1] != etf.Atom("dropped") && t[1] != etf.Atom("absent")) {
		return false, m.shape(node, "drop_copy", t)
	}
	return t[1] == etf.Atom("dropped"), nil
}

// AddCopy is migctl_migrate:add_copy/4, run on node: add target's replica
// of tab as typ (mnesia:add_table_copy, a bulk copy from a live replica),
// wait up to wait for it to be loaded there, and have target's change
// recorder subscribe again. added is false when target had one already.
// Reply: {ok, added | present, Millis}.
func (s Migrate) AddCopy(ctx context.Context, node, tab, target, typ string, wait time.Duration) (added bool, took time.Duration, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "add_copy", etf.Atom(tab), etf.Atom(target), etf.Atom(typ), int64(wait/time.Millisecond))
	if err != nil {
		return false, 0, err
	}
	if m.okN(node, "add_copy", t, 2) != nil || (t[1] != etf.Atom("added") && t[1] != etf.Atom("present")) || !isInt(t[2]) {
		return false, 0, m.shape(node, "add_copy", t)
	}
	return t[1] == etf.Atom("added"), time.Duration(asInt(t[2])) * time.Millisecond, nil
}
