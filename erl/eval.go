package erl

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ergo-services/ergo/etf"
)

// Eval evaluates Erlang expressions on node with erl_eval, for code that is
// not an exported function (a transaction fun, a small loop). src is a
// sequence of expressions without the final dot, e.g.
//
//	"mnesia:transaction(fun() -> mnesia:read(T, K) end)"
//
// It is scanned and parsed on the node the first time it is used and the
// abstract form is cached here, so later calls send the form and the
// bindings only (about a third of the cost of parsing each time). The body
// is wrapped in a fun that is called at once, so erl_eval returns the value
// alone instead of echoing every binding (a binding holding a binary-keyed
// map would otherwise come back and break the connection).
//
// Bindings are variables visible to src; names must start with a capital.
// Interpreted code is slow in loops: anything on a hot path belongs in the
// agent instead.
func (c *Client) Eval(ctx context.Context, nodeName, src string, bindings map[string]Term) (Term, error) {
	form, err := c.form(ctx, nodeName, src)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(bindings))
	for k := range bindings {
		names = append(names, k)
	}
	sort.Strings(names) // erl_eval's bindings are an orddict
	bl := make(etf.List, 0, len(names))
	for _, k := range names {
		bl = append(bl, etf.Tuple{etf.Atom(k), bindings[k]})
	}
	t, err := c.Call(ctx, nodeName, "erl_eval", "exprs", form, bl)
	if err != nil {
		return nil, err
	}
	tup, ok := t.(etf.Tuple)
	if !ok || len(tup) != 3 || tup[0] != etf.Atom("value") {
		return nil, &Error{Op: "eval", Node: nodeName, Err: fmt.Errorf("%w: unexpected result %v", ErrBadRPC, t)}
	}
	return tup[1], nil
}

func (c *Client) form(ctx context.Context, nodeName, src string) (Term, error) {
	c.mu.Lock()
	f, ok := c.forms[src]
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	wrapped := "(fun() -> " + strings.TrimSuffix(strings.TrimSpace(src), ".") + " end)()."
	toks, err := c.Call(ctx, nodeName, "erl_scan", "string", wrapped)
	if err != nil {
		return nil, err
	}
	tt, ok := toks.(etf.Tuple)
	if !ok || len(tt) != 3 || tt[0] != etf.Atom("ok") {
		return nil, fmt.Errorf("scan expression: %v", toks)
	}
	parsed, err := c.Call(ctx, nodeName, "erl_parse", "parse_exprs", tt[1])
	if err != nil {
		return nil, err
	}
	pt, ok := parsed.(etf.Tuple)
	if !ok || len(pt) != 2 || pt[0] != etf.Atom("ok") {
		return nil, fmt.Errorf("parse expression: %v", parsed)
	}
	c.mu.Lock()
	c.forms[src] = pt[1]
	c.mu.Unlock()
	return pt[1], nil
}
