package agentapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// ErrReplyShape: an agent reply that does not have the shape its stub
// documents (an agent of another version, or a bug on either side).
var ErrReplyShape = errors.New("agent reply has an unexpected shape")

// Store names a store the way the agent modules expect it: the kind and
// table, and for DETS the file (empty: the file the application has open)
// and whether a missing file may be created.
type Store struct {
	Kind   string // "ets", "dets" or "mnesia"
	Table  string
	File   string
	Create bool
}

// term is the store spec every agent function dispatches on:
// {ets, Tab} | {dets, Tab, File, Create, OwnerPid} | {mnesia, Tab}. A DETS
// table migctl opens is owned by the caller's pid so it closes when
// migctl goes away.
func (s Store) term(c *erl.Client) etf.Term {
	switch s.Kind {
	case "dets":
		return etf.Tuple{etf.Atom("dets"), etf.Atom(s.Table), s.File, s.Create, c.Self()}
	default:
		return etf.Tuple{etf.Atom(s.Kind), etf.Atom(s.Table)}
	}
}

// module is one agent module on the client's nodes.
type module struct {
	c    *erl.Client
	name string
}

// call runs name:fun(args...) on node and returns the {ok, ...} tuple.
func (m module) call(ctx context.Context, node, fun string, args ...etf.Term) (etf.Tuple, error) {
	return m.c.Agent(ctx, node, m.name+":"+fun, args...)
}

// shape is the error for a reply of the wrong shape.
func (m module) shape(node, fun string, got etf.Term) error {
	// A batch can be half a megabyte: say enough to recognise the reply.
	s := fmt.Sprint(got)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return &erl.Error{Op: m.name + ":" + fun, Node: node, Err: fmt.Errorf("%w: %s", ErrReplyShape, s)}
}

// okN checks an {ok, ...} reply has n elements after ok.
func (m module) okN(node, fun string, t etf.Tuple, n int) error {
	if len(t) != n+1 || t[0] != etf.Atom("ok") {
		return m.shape(node, fun, t)
	}
	return nil
}

// asInt reads an integer whichever Go type ergo chose for it.
func asInt(t etf.Term) int64 { return erl.Int64(t) }

// asBytes reads a binary (or charlist, or atom) as bytes.
func asBytes(t etf.Term) []byte { return erl.Bytes(t) }

// asList reads a list; a non-list is an empty list.
func asList(t etf.Term) etf.List {
	l, _ := t.(etf.List)
	return l
}

// asAtom reads an atom as a string ("" for anything else).
func asAtom(t etf.Term) string {
	a, _ := t.(etf.Atom)
	return string(a)
}

// atoms encodes strings as a list of atoms (node and table names).
func atoms(ss []string) etf.List {
	l := make(etf.List, len(ss))
	for i, s := range ss {
		l[i] = etf.Atom(s)
	}
	return l
}

// isInt says whether t is an integer as ergo decodes one (whatever Go
// integer type it chose), for decodes that must tell a count from
// something else rather than read it as 0.
func isInt(t etf.Term) bool {
	switch t.(type) {
	case int, int64, int32, int16, int8, uint64, uint32, uint16, uint8:
		return true
	}
	return false
}
