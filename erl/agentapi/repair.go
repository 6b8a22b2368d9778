package agentapi

import (
	"context"

	"github.com/ergo-services/ergo/etf"
)

// CASResult counts what PutIf did.
type CASResult struct {
	Written, Deleted, Skipped int
}

// PutIf is migctl_agent:put_if/2: one compare-and-set per session, frames
// <<IdLen:32, Id, ExpectLen:32, Expect, NewLen:32, New>>* (term_to_binary
// of a session, empty for none): the session becomes New (none: deleted)
// only while st still holds exactly Expect. Reply
// {ok, Written, Deleted, Skipped}.
func (s Agent) PutIf(ctx context.Context, node string, st Store, frames []byte) (CASResult, error) {
	const fun = "put_if"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), frames)
	if err != nil {
		return CASResult{}, err
	}
	return m.putIfReply(node, t)
}

func (m module) putIfReply(node string, t etf.Tuple) (CASResult, error) {
	if _, err := m.intsReply(node, "put_if", t, 3); err != nil {
		return CASResult{}, err
	}
	return CASResult{Written: int(asInt(t[1])), Deleted: int(asInt(t[2])), Skipped: int(asInt(t[3]))}, nil
}

// Routed is migctl_agent:routed/2: for each id, whether the hybrid
// backend's phase2 at percent reads it from the secondary
// (erlang:phash2(Id, 100) < Percent). Reply {ok, Bits}, one byte (0 or 1)
// per id, in order.
func (s Agent) Routed(ctx context.Context, node string, ids []string, percent int) ([]bool, error) {
	const fun = "routed"
	m := s.mod()
	t, err := m.call(ctx, node, fun, EncodeIDs(ids), percent)
	if err != nil {
		return nil, err
	}
	return m.routedReply(node, t, len(ids))
}

func (m module) routedReply(node string, t etf.Tuple, n int) ([]bool, error) {
	const fun = "routed"
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	bits, ok := t[1].([]byte)
	if !ok || len(bits) != n {
		return nil, m.shape(node, fun, t)
	}
	out := make([]bool, n)
	for i, b := range bits {
		out[i] = b == 1
	}
	return out, nil
}

// HybridSides is what a phase-aware repair needs of migctl_migrate's
// status: whether the hybrid backend runs, its phase, and the kinds of
// store its two sides are.
type HybridSides struct {
	Installed bool
	Phase     string // phase0 .. phase3
	Percent   int
	// Primary and Secondary are the sides' store kinds ("ets", "dets",
	// "mnesia"); empty when the status does not name them.
	Primary, Secondary string
}

// HybridSides is migctl_migrate:status/0 read for a repair. Reply
// {ok, Props}, Props a list of {installed, Bool} | {phase, Phase} |
// {percent, N} | {primary, {Kind, Tab}} | {secondary, {Kind, Tab}} and
// other keys (backend, epoch, counters...) passed over here.
func (s Migrate) HybridSides(ctx context.Context, node string) (HybridSides, error) {
	const fun = "status"
	m := s.mod()
	t, err := m.call(ctx, node, fun)
	if err != nil {
		return HybridSides{}, err
	}
	return m.hybridSidesReply(node, t)
}

func (m module) hybridSidesReply(node string, t etf.Tuple) (HybridSides, error) {
	const fun = "status"
	if err := m.okN(node, fun, t, 1); err != nil {
		return HybridSides{}, err
	}
	props, ok := t[1].(etf.List)
	if !ok {
		return HybridSides{}, m.shape(node, fun, t)
	}
	var h HybridSides
	for _, p := range props {
		kv, ok := p.(etf.Tuple)
		if !ok || len(kv) != 2 {
			return HybridSides{}, m.shape(node, fun, t)
		}
		switch kv[0] {
		case etf.Atom("installed"):
			if h.Installed, ok = kv[1].(bool); !ok {
				return HybridSides{}, m.shape(node, fun, t)
			}
		case etf.Atom("phase"):
			if h.Phase = asAtom(kv[1]); h.Phase == "" {
				return HybridSides{}, m.shape(node, fun, t)
			}
		case etf.Atom("percent"):
			if !isInt(kv[1]) {
				return HybridSides{}, m.shape(node, fun, t)
			}
			h.Percent = int(asInt(kv[1]))
		case etf.Atom("primary"), etf.Atom("secondary"):
			st, ok := kv[1].(etf.Tuple)
			if !ok || len(st) != 2 || asAtom(st[0]) == "" {
				return HybridSides{}, m.shape(node, fun, t)
			}
			if kv[0] == etf.Atom("primary") {
				h.Primary = asAtom(st[0])
			} else {
				h.Secondary = asAtom(st[0])
			}
		}
	}
	return h, nil
}
