package agentapi

import (
	"context"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// RecorderInfo is what one node's change recorder (migctl_recorder, in the
// migctl_node library on the service's nodes) covers, as
// migctl_cluster:recorder_info/1 reports it.
type RecorderInfo struct {
	// Running is false when the library is not there or its recorder is
	// not running (then Tables is empty).
	Running                         bool
	Tables                          []RecorderTable
	Keys, MemoryBytes, WindowMillis int64
	Writes, Deletes, Pruned         int64
}

// RecorderTable is one table's coverage: every change of it on the node
// since Since (ms) is recorded; Since is -1 while the table is not covered
// (Mnesia stopped, no such table). Cleared is when it was last cleared
// (ms), or 0.
type RecorderTable struct {
	Table          string
	Since, Cleared int64
}

// RecorderInfo reads node's change recorder for tabs.
//
//	migctl_cluster:recorder_info(Tabs) ->
//	    {ok, Running, [{Tab, Since, Cleared}], Keys, MemoryBytes, WindowMs, Writes, Deletes, Pruned}
func (s Cluster) RecorderInfo(ctx context.Context, node string, tabs []string) (RecorderInfo, error) {
	const fun = "recorder_info"
	t, err := s.mod().call(ctx, node, fun, atoms(tabs))
	if err != nil {
		return RecorderInfo{}, err
	}
	return DecodeRecorderInfo(node, t)
}

// DecodeRecorderInfo reads the reply of migctl_cluster:recorder_info/1,
// which is also the recorder entry of every node's view
// (migctl_cluster:view/1): a tuple of 9 elements, see RecorderInfo. A
// wrong shape is an ErrReplyShape naming node.
func DecodeRecorderInfo(node string, t erl.Term) (RecorderInfo, error) {
	const fun = "recorder_info"
	m := module{name: "migctl_cluster"}
	tt, ok := t.(etf.Tuple)
	if !ok {
		return RecorderInfo{}, m.shape(node, fun, t)
	}
	if err := m.okN(node, fun, tt, 8); err != nil {
		return RecorderInfo{}, err
	}
	var ri RecorderInfo
	switch v := tt[1].(type) {
	case bool: // ergo decodes true/false as Go bools
		ri.Running = v
	case etf.Atom:
		ri.Running = v == "true"
	default:
		return RecorderInfo{}, m.shape(node, fun, t)
	}
	l, ok := tt[2].(etf.List)
	if !ok && tt[2] != nil {
		return RecorderInfo{}, m.shape(node, fun, t)
	}
	for _, x := range l {
		e, ok := x.(etf.Tuple)
		if !ok || len(e) != 3 {
			return RecorderInfo{}, m.shape(node, fun, t)
		}
		tab := asAtom(e[0])
		if tab == "" {
			tab = string(asBytes(e[0]))
		}
		ri.Tables = append(ri.Tables, RecorderTable{Table: tab, Since: asInt(e[1]), Cleared: asInt(e[2])})
	}
	ri.Keys, ri.MemoryBytes, ri.WindowMillis = asInt(tt[3]), asInt(tt[4]), asInt(tt[5])
	ri.Writes, ri.Deletes, ri.Pruned = asInt(tt[6]), asInt(tt[7]), asInt(tt[8])
	return ri, nil
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
