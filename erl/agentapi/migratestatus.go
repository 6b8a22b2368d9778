package agentapi

import (
	"context"

	"github.com/ergo-services/ergo/etf"
)

// The key-value replies of migctl_migrate (status/0, load/1): a list of
// {Key, Value} pairs. Keys this stub does not know are skipped, so that a
// newer agent may report more; a known key with a value of the wrong type,
// or an element that is not a pair, is a wrong shape.

// HybridSide is one side of the hybrid backend: the store's kind
// ("ets", "dets", "mnesia") and table.
type HybridSide struct {
	Kind  string
	Table string
}

// MigrateStatus is what status/0 reports about a node's store.
type MigrateStatus struct {
	// Installed: the store server runs the hybrid backend; the fields
	// below Backend are then set.
	Installed bool
	// Backend is the store server's backend module ("unknown" when a
	// store server other than the hybrid does not say).
	Backend  string
	Phase    string // phase0..phase3
	Percent  int
	Epoch    int64
	Fallback bool
	Mode     string
	// Primary and Secondary are the hybrid's two sides.
	Primary, Secondary HybridSide
	// Counters are the hybrid's counters; nil when the reply had none
	// (a node without the hybrid).
	Counters map[string]int64
	// DualWritesPending: phase1 writes the node acknowledged that its
	// Mnesia side has not applied yet (0 from an agent that does not say).
	DualWritesPending int64
}

// Status reads node's store backend and, when it is the hybrid, its
// phase, sides and counters.
// Reply: {ok, [{installed, Bool}, {backend, Module}, {phase, Phase},
// {percent, Int}, {epoch, Int}, {fallback, Bool}, {mode, Atom},
// {primary, {Kind, Tab}}, {secondary, {Kind, Tab}},
// {counters, [{Name, Int}]}, {dual_writes_pending, Int}]}; a node without
// the hybrid answers the first two pairs only.
func (s Migrate) Status(ctx context.Context, node string) (MigrateStatus, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "status")
	if err != nil {
		return MigrateStatus{}, err
	}
	return decodeStatus(m, node, t)
}

func decodeStatus(m module, node string, t etf.Tuple) (MigrateStatus, error) {
	const fun = "status"
	var st MigrateStatus
	bad := func() (MigrateStatus, error) { return MigrateStatus{}, m.shape(node, fun, t) }
	pairs, ok := migPairs(m, t)
	if !ok {
		return bad()
	}
	for _, p := range pairs {
		v := p[1]
		switch p[0] {
		case etf.Atom("installed"):
			if st.Installed, ok = v.(bool); !ok {
				return bad()
			}
		case etf.Atom("backend"):
			if st.Backend, ok = migText(v); !ok {
				return bad()
			}
		case etf.Atom("phase"):
			if st.Phase, ok = migText(v); !ok {
				return bad()
			}
		case etf.Atom("percent"):
			if !migIsInt(v) {
				return bad()
			}
			st.Percent = int(asInt(v))
		case etf.Atom("epoch"):
			if !migIsInt(v) {
				return bad()
			}
			st.Epoch = asInt(v)
		case etf.Atom("fallback"):
			if st.Fallback, ok = v.(bool); !ok {
				return bad()
			}
		case etf.Atom("mode"):
			if st.Mode, ok = migText(v); !ok {
				return bad()
			}
		case etf.Atom("primary"):
			if st.Primary, ok = migStoreName(v); !ok {
				return bad()
			}
		case etf.Atom("secondary"):
			if st.Secondary, ok = migStoreName(v); !ok {
				return bad()
			}
		case etf.Atom("dual_writes_pending"):
			if !migIsInt(v) {
				return bad()
			}
			st.DualWritesPending = asInt(v)
		case etf.Atom("counters"):
			l, ok := v.(etf.List)
			if !ok {
				return bad()
			}
			st.Counters = make(map[string]int64, len(l))
			for _, c := range l {
				ct, ok := c.(etf.Tuple)
				if !ok || len(ct) != 2 || !migIsInt(ct[1]) {
					return bad()
				}
				name, ok := migText(ct[0])
				if !ok {
					return bad()
				}
				st.Counters[name] = asInt(ct[1])
			}
		}
	}
	return st, nil
}

// NodeLoad is one reading of a node's load, as the backfill throttle sees it.
type NodeLoad struct {
	// SchedUtil is the scheduler utilisation over 250 ms, 0..1; negative
	// when the node could not measure it.
	SchedUtil float64
	// RunQueue is the run queue; StoreQueue and MnesiaQueue the message
	// queues of the store server and mnesia_tm.
	RunQueue, StoreQueue, MnesiaQueue int64
	// Overloads counts the mnesia_overload events since the node's watcher
	// started (it lives as long as this client's process).
	Overloads int64
}

// Load samples node's load (the node measures for 250 ms) and starts its
// overload watcher, owned by this client's process, if none runs.
// Reply: {ok, [{sched_util, Float}, {run_queue, Int}, {store_queue, Int},
// {mnesia_tm_queue, Int}, {overloads, Int}]}.
func (s Migrate) Load(ctx context.Context, node string) (NodeLoad, error) {
	m := s.mod()
	t, err := m.call(ctx, node, "load", s.C.Self())
	if err != nil {
		return NodeLoad{}, err
	}
	return decodeLoad(m, node, t)
}

func decodeLoad(m module, node string, t etf.Tuple) (NodeLoad, error) {
	var l NodeLoad
	pairs, ok := migPairs(m, t)
	if !ok {
		return NodeLoad{}, m.shape(node, "load", t)
	}
	for _, p := range pairs {
		var dst *int64
		switch p[0] {
		case etf.Atom("sched_util"):
			f, ok := migFloat(p[1])
			if !ok {
				return NodeLoad{}, m.shape(node, "load", t)
			}
			l.SchedUtil = f
			continue
		case etf.Atom("run_queue"):
			dst = &l.RunQueue
		case etf.Atom("store_queue"):
			dst = &l.StoreQueue
		case etf.Atom("mnesia_tm_queue"):
			dst = &l.MnesiaQueue
		case etf.Atom("overloads"):
			dst = &l.Overloads
		default:
			continue
		}
		if !migIsInt(p[1]) {
			return NodeLoad{}, m.shape(node, "load", t)
		}
		*dst = asInt(p[1])
	}
	return l, nil
}

// migPairs reads {ok, [{Key, Value}]}: false when t is not that shape.
func migPairs(m module, t etf.Tuple) ([]etf.Tuple, bool) {
	if m.okN("", "", t, 1) != nil {
		return nil, false
	}
	l, ok := t[1].(etf.List)
	if !ok {
		return nil, false
	}
	out := make([]etf.Tuple, len(l))
	for i, x := range l {
		p, ok := x.(etf.Tuple)
		if !ok || len(p) != 2 {
			return nil, false
		}
		out[i] = p
	}
	return out, true
}

// migStoreName reads {Kind, Tab}.
func migStoreName(t etf.Term) (HybridSide, bool) {
	tt, ok := t.(etf.Tuple)
	if !ok || len(tt) != 2 {
		return HybridSide{}, false
	}
	k, ok1 := migText(tt[0])
	tab, ok2 := migText(tt[1])
	return HybridSide{Kind: k, Table: tab}, ok1 && ok2
}

// migText reads an atom or a binary as a string.
func migText(t etf.Term) (string, bool) {
	switch v := t.(type) {
	case etf.Atom:
		return string(v), true
	case []byte:
		return string(v), true
	case string:
		return v, true
	}
	return "", false
}

// migIsInt: t is an integer, whichever Go type ergo chose for it.
func migIsInt(t etf.Term) bool {
	switch t.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return true
	}
	return false
}

// migFloat reads a float, or an integer as a float.
func migFloat(t etf.Term) (float64, bool) {
	switch v := t.(type) {
	case float64:
		return v, true
	case float32:
		return float64(v), true
	}
	if migIsInt(t) {
		return float64(asInt(t)), true
	}
	return 0, false
}
