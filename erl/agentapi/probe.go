package agentapi

import (
	"context"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// Look is one look at one of the service's session processes (see
// Migrate.Probe).
type Look struct {
	// Proc: "store" (the session store server), "dets" (the DETS server
	// of the session file), "mnesia_tm" or "recorder".
	Proc   string
	Queue  int64  // message queue length
	Status string // erlang:process_info status: waiting, running, runnable, ...
	// Frames: the top of its stack, "module:function/arity", at most 6.
	Frames []string
}

// Probe looks samples times, interval apart, at the processes every
// session call of node waits on (the store server, detsTab's DETS server
// when the file is open, Mnesia's transaction manager, the change
// recorder); processes not there are left out. At most 25 looks a call.
//
//	migctl_migrate:probe(DetsTab, Samples, IntervalMs) ->
//	    {ok, [{Proc, Qlen, Status, [<<"m:f/a">>]}]}
func (s Migrate) Probe(ctx context.Context, node, detsTab string, samples int, interval time.Duration) ([]Look, error) {
	const fun = "probe"
	m := s.mod()
	t, err := m.call(ctx, node, fun, etf.Atom(detsTab), samples, int(interval/time.Millisecond))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	l, ok := t[1].(etf.List)
	if !ok {
		return nil, m.shape(node, fun, t)
	}
	out := make([]Look, 0, len(l))
	for _, x := range l {
		e, ok := x.(etf.Tuple)
		if !ok || len(e) != 4 || !migIsInt(e[1]) {
			return nil, m.shape(node, fun, t)
		}
		proc, ok1 := migText(e[0])
		status, ok2 := migText(e[2])
		frames, ok3 := e[3].(etf.List)
		if !ok1 || !ok2 || !ok3 {
			return nil, m.shape(node, fun, t)
		}
		lk := Look{Proc: proc, Queue: asInt(e[1]), Status: status}
		for _, f := range frames {
			s, ok := migText(f)
			if !ok {
				return nil, m.shape(node, fun, t)
			}
			lk.Frames = append(lk.Frames, s)
		}
		out = append(out, lk)
	}
	return out, nil
}
