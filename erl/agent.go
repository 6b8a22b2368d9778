package erl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erlang/agent"
)

// EnsureAgent makes migctl's agent modules available on node. A module that
// is already loaded with the same md5 (another migctl, or a daemon, put it
// there) is used as it is and left in place at Close. Otherwise the old code
// is soft-purged first; if some process still runs it, loading stops with an
// error rather than let the code server kill that process.
//
// Calls to one node load the agent once: a check reads the two sides of a
// node at the same time, and two loads racing each other loaded every
// module twice (seen in the big run's log), leaving the first copy as old
// code under whatever the first caller had started running.
func (c *Client) EnsureAgent(ctx context.Context, nodeName string) error {
	c.mu.Lock()
	ready := c.agents[nodeName]
	sem := c.loading[nodeName]
	if sem == nil {
		sem = make(chan struct{}, 1)
		c.loading[nodeName] = sem
	}
	c.mu.Unlock()
	if ready {
		return nil
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sem }()
	c.mu.Lock()
	ready = c.agents[nodeName] // loaded by the caller this one waited for
	c.mu.Unlock()
	if ready {
		return nil
	}
	for _, m := range agent.Modules() {
		loaded, err := c.loadModule(ctx, nodeName, m)
		if err != nil {
			return err
		}
		if loaded {
			c.mu.Lock()
			c.mine[nodeName] = append(c.mine[nodeName], m.Name)
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.agents[nodeName] = true
	c.mu.Unlock()
	return nil
}

func (c *Client) loadModule(ctx context.Context, nodeName string, m agent.Module) (bool, error) {
	op := "load agent module " + m.Name
	want, err := c.Call(ctx, nodeName, "beam_lib", "md5", m.Beam)
	if err != nil {
		return false, err
	}
	wt, ok := want.(etf.Tuple)
	if !ok || len(wt) != 2 || wt[0] != etf.Atom("ok") {
		return false, &Error{Op: op, Node: nodeName, Err: fmt.Errorf("%w: beam_lib:md5: %v", ErrBadRPC, want)}
	}
	wantMD5, _ := wt[1].(etf.Tuple)[1].([]byte)
	isLoaded, err := c.Call(ctx, nodeName, "code", "is_loaded", etf.Atom(m.Name))
	if err != nil {
		return false, err
	}
	if isLoaded != false {
		have, err := c.Call(ctx, nodeName, m.Name, "module_info", etf.Atom("md5"))
		if err != nil {
			return false, err
		}
		if hb, ok := have.([]byte); ok && bytes.Equal(hb, wantMD5) {
			return false, nil
		}
	}
	// An abandoned call (its caller timed out) may still be running the
	// old code for a moment: retry briefly before refusing.
	var purged Term
	for attempt := 0; attempt < 5; attempt++ {
		var err error
		purged, err = c.Call(ctx, nodeName, "code", "soft_purge", etf.Atom(m.Name))
		if err != nil {
			return false, err
		}
		if purged == true {
			break
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if purged != true {
		return false, &Error{Op: op, Node: nodeName, Err: errors.New("old code of the module is still running"),
			Hint: c.oldCodeHint(ctx, nodeName, m.Name)}
	}
	res, err := c.Call(ctx, nodeName, "code", "load_binary", etf.Atom(m.Name), m.Name+".beam", m.Beam)
	if err != nil {
		return false, err
	}
	if rt, ok := res.(etf.Tuple); !ok || len(rt) != 2 || rt[0] != etf.Atom("module") {
		return false, &Error{Op: op, Node: nodeName, Err: fmt.Errorf("%w: %v", ErrBadRPC, res)}
	}
	c.log.Debug("agent loaded", "node", nodeName, "module", m.Name)
	return true, nil
}

// oldCodeHint says who still runs the old code of mod on node: another
// migctl's agent, or a call an earlier migctl abandoned (its caller timed
// out) that is still waiting on the node, and where it waits.
func (c *Client) oldCodeHint(ctx context.Context, nodeName, mod string) string {
	const generic = "another migctl is using an older agent on this node; wait for it to finish"
	t, err := c.Eval(ctx, nodeName, `[case process_info(P, current_function) of
	        {current_function, {M, F, A}} -> iolist_to_binary(io_lib:format("~s:~s/~b", [M, F, A]));
	        _ -> <<"?">>
	    end || P <- processes(), erlang:check_process_code(P, Mod)]`, map[string]Term{"Mod": etf.Atom(mod)})
	l, ok := t.(etf.List)
	if err != nil || !ok || len(l) == 0 {
		return generic
	}
	where := make([]string, 0, len(l))
	for _, x := range l {
		if b, ok := x.([]byte); ok {
			where = append(where, string(b))
		}
	}
	return fmt.Sprintf("%d process(es) on the node still run it, waiting in %s: an earlier migctl's call that timed out, "+
		"or another migctl with an older agent; it is free when they return (a DETS table still opening "+
		"after a crash holds them until its repair ends)", len(l), strings.Join(where, ", "))
}

// UnloadAgent removes from node the agent modules this Client loaded there,
// unless someone still needs them: another migctl connected to the node (a
// monitor daemon, a watch: they are hidden nodes named migctl_*), or a
// process still running the code (a forwarder). Deleting code under them
// would leave them without a current version and make the next load fail.
// The last migctl to leave removes it.
func (c *Client) UnloadAgent(ctx context.Context, nodeName string) error {
	c.mu.Lock()
	mods := c.mine[nodeName]
	delete(c.mine, nodeName)
	delete(c.agents, nodeName)
	c.mu.Unlock()
	if len(mods) == 0 {
		return nil
	}
	// Release DETS tables our owners hold before deciding anything.
	_, _ = c.Call(ctx, nodeName, "migctl_agent", "release_all")
	names := make(etf.List, len(mods))
	for i, m := range mods {
		names[i] = etf.Atom(m)
	}
	// A process counts if the code is anywhere on its stack, not only
	// where it runs now: a call abandoned by its caller's timeout waits
	// in dets or mnesia with the agent's frames under it, and deleting
	// the code then would leave the node with no current version and the
	// old one in use, which no migctl could replace until that call ends.
	// The backtrace has every frame (current_stacktrace stops at 8).
	busy, err := c.Eval(ctx, nodeName, `Me = node(Self),
	    Others = [N || N <- nodes(hidden), N =/= Me,
	                   lists:prefix("migctl_", atom_to_list(N))],
	    Pats = [<<"(", (atom_to_binary(M))/binary, ":">> || M <- Mods],
	    Running = [P || P <- processes(), P =/= self(),
	                    {backtrace, B} <- [process_info(P, backtrace)],
	                    binary:match(B, Pats) =/= nomatch],
	    {length(Others), length(Running)}`, map[string]Term{"Self": c.Self(), "Mods": names})
	if err != nil {
		return err
	}
	if bt, ok := busy.(etf.Tuple); ok && len(bt) == 2 && (Int64(bt[0]) > 0 || Int64(bt[1]) > 0) {
		c.log.Debug("agent left loaded: still in use", "node", nodeName, "other_migctls", bt[0], "processes", bt[1])
		return nil
	}
	var errs []error
	for _, m := range mods {
		mod := etf.Atom(m)
		if _, err := c.Call(ctx, nodeName, "code", "soft_purge", mod); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := c.Call(ctx, nodeName, "code", "delete", mod); err != nil {
			errs = append(errs, err)
			continue
		}
		ok, err := c.Call(ctx, nodeName, "code", "soft_purge", mod)
		if err != nil {
			errs = append(errs, err)
		} else if ok != true {
			errs = append(errs, fmt.Errorf("unload %s on %s: still in use by a process; left loaded", m, nodeName))
		}
	}
	return errors.Join(errs...)
}

// Agent calls migctl_agent:Fun(Args...) (or another agent module given as
// "mod:fun") on node, loading the agent first if needed. The agent returns
// {ok, ...} or {error, Reason}; the latter becomes an *RPCError. If the
// module has vanished (another migctl unloaded it), it is loaded again once.
func (c *Client) Agent(ctx context.Context, nodeName, fun string, args ...Term) (etf.Tuple, error) {
	mod := "migctl_agent"
	if i := strings.IndexByte(fun, ':'); i > 0 {
		mod, fun = fun[:i], fun[i+1:]
	}
	for attempt := 0; ; attempt++ {
		if err := c.EnsureAgent(ctx, nodeName); err != nil {
			return nil, err
		}
		t, err := c.Call(ctx, nodeName, mod, fun, args...)
		if err != nil {
			var re *RPCError
			if attempt == 0 && errors.As(err, &re) && strings.Contains(re.Reason, "undef") {
				c.mu.Lock()
				delete(c.agents, nodeName)
				c.mu.Unlock()
				continue
			}
			return nil, err
		}
		tup, ok := t.(etf.Tuple)
		if !ok || len(tup) == 0 {
			return nil, &Error{Op: mod + ":" + fun, Node: nodeName, Err: fmt.Errorf("%w: unexpected reply %v", ErrBadRPC, t)}
		}
		if tup[0] == etf.Atom("error") && len(tup) == 2 {
			return nil, &Error{Op: mod + ":" + fun, Node: nodeName, Err: &RPCError{Class: "error", Reason: ReasonText(tup[1])}}
		}
		return tup, nil
	}
}

// ReasonText is an {error, Reason}'s reason as text: an atom's name, a
// binary's or charlist's bytes, else as Go prints it. Agent reads reasons
// this way, and so do the stubs, so callers match one spelling.
func ReasonText(t Term) string {
	switch v := t.(type) {
	case etf.Atom:
		return string(v)
	case []byte:
		return string(v)
	case string:
		return v
	}
	return fmt.Sprint(t)
}
