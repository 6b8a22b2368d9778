package agentapi

import (
	"context"
	"fmt"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Recorder is what a node's change recorder (migctl_recorder, in the
// migctl_node library on the service's nodes) covers: the reply of
// migctl_cluster:recorder_info/1, which is also the recorder entry of every
// node's view (View.Recorder). Both are read by parseRecorder, so the two
// cannot drift apart.
type Recorder struct {
	// Running is false when the library is not there or its recorder is
	// not running (the rest is then zero).
	Running bool
	// Since is, per table asked for, the start of the coverage (ms): every
	// change of the table on the node since then is recorded; -1 while the
	// table is not covered (Mnesia stopped, no such table). Cleared is when
	// it was last cleared (ms), or 0.
	Since, Cleared map[string]int64

	// Keys held, their memory, the window they span (ms), and the
	// changes recorded and pruned since the recorder started.
	Keys, MemoryBytes, WindowMillis int64
	Writes, Deletes, Pruned         int64
}

// RecorderInfo reads node's change recorder for tabs.
//
//	migctl_cluster:recorder_info(Tabs) ->
//	    {ok, Running, [{Tab, Since, Cleared}], Keys, MemoryBytes, WindowMs, Writes, Deletes, Pruned}
func (s Cluster) RecorderInfo(ctx context.Context, node string, tabs []string) (Recorder, error) {
	const fun = "recorder_info"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(tabs))
	if err != nil {
		return Recorder{}, err
	}
	return m.recorderReply(node, fun, t)
}

// recorderReply reads recorder_info/1's reply; a wrong shape is an
// ErrReplyShape naming node and fun.
func (m module) recorderReply(node, fun string, t etf.Tuple) (Recorder, error) {
	r, err := parseRecorder(t)
	if err != nil {
		return Recorder{}, m.shape(node, fun, err.Error())
	}
	return r, nil
}

// parseRecorder reads recorder_info/1's reply, a tuple of 9 elements (see
// Cluster.RecorderInfo), wherever it comes from (the call, or a view's
// recorder entry); the error says which part is wrong, and the caller
// wraps it as the shape error of its own function.
func parseRecorder(x etf.Term) (Recorder, error) {
	t, ok := x.(etf.Tuple)
	if !ok || len(t) != 9 || t[0] != etf.Atom("ok") {
		return Recorder{}, fmt.Errorf("not {ok, ...} of 9 elements: %v", x)
	}
	running, ok := erlBool(t[1])
	if !ok {
		return Recorder{}, fmt.Errorf("running %v", t[1])
	}
	r := Recorder{Running: running, Since: map[string]int64{}, Cleared: map[string]int64{}}
	l, ok := t[2].(etf.List)
	if !ok {
		return Recorder{}, fmt.Errorf("tables %v", t[2])
	}
	for _, x := range l {
		e, ok := x.(etf.Tuple)
		if !ok || len(e) != 3 || asAtom(e[0]) == "" {
			return Recorder{}, fmt.Errorf("table entry %v", x)
		}
		since, ok1 := erlInt(e[1])
		cleared, ok2 := erlInt(e[2])
		if !ok1 || !ok2 {
			return Recorder{}, fmt.Errorf("table entry %v", x)
		}
		r.Since[asAtom(e[0])], r.Cleared[asAtom(e[0])] = since, cleared
	}
	for i, dst := range []*int64{&r.Keys, &r.MemoryBytes, &r.WindowMillis, &r.Writes, &r.Deletes, &r.Pruned} {
		if *dst, ok = erlInt(t[3+i]); !ok {
			return Recorder{}, fmt.Errorf("element %d: %v", 4+i, t[3+i])
		}
	}
	return r, nil
}

// NetTicktime reads node's net_ticktime (seconds), the heal's input for
// its keep window; while a change of it is under way, the new value.
//
//	net_kernel:get_net_ticktime() -> Seconds | {ongoing_change_to, Seconds} | ignored
func (s Cluster) NetTicktime(ctx context.Context, node string) (int64, error) {
	t, err := s.C.Call(ctx, node, "net_kernel", "get_net_ticktime")
	if err != nil {
		return 0, err
	}
	return decodeTicktime(node, t)
}

// decodeTicktime reads net_kernel:get_net_ticktime/0's reply; ignored
// (the node is not distributed) is 0.
func decodeTicktime(node string, t erl.Term) (int64, error) {
	m := module{name: "net_kernel"}
	switch v := t.(type) {
	case etf.Tuple:
		if len(v) == 2 && v[0] == etf.Atom("ongoing_change_to") {
			return asInt(v[1]), nil
		}
	case etf.Atom:
		if v == "ignored" {
			return 0, nil
		}
	case int, int8, int16, int32, int64, uint8, uint16, uint32, uint64:
		return asInt(v), nil
	}
	return 0, m.shape(node, "get_net_ticktime", t)
}
