package agentapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// This file holds the migctl_cluster functions behind Status, Watch and
// the membership changes (AddNode, RemoveNode, ResyncNode) and the ones
// the heal shares with them (the recorder, connect, the reload), and the
// plain Mnesia call package cluster makes. cluster.go holds the heal's own.

// View is one node's own view of the cluster (migctl_cluster:view/1).
// Node lists are in the order the node gave them.
type View struct {
	// IsRunning is mnesia:system_info(is_running): yes, no, starting,
	// stopping.
	IsRunning string
	// Cookie is the schema cookie as the node prints it; empty while
	// Mnesia is not running.
	Cookie    string
	Connected []string // nodes()
	// DBNodes is read from the schema on disc when Mnesia is stopped
	// (empty when it cannot be).
	DBNodes        []string
	RunningDBNodes []string
	Recorder       Recorder
	Tables         []ViewTable // of the tables asked for that the node has
	// MasterNodes is, per table of the node's schema, its master nodes
	// (empty for most).
	MasterNodes map[string][]string
}

// ViewTable is one table as a node sees it.
type ViewTable struct {
	Name    string
	Storage string // disc_copies, ram_copies, disc_only_copies, unknown (no copy here)
	Size    int64  // -1 when the node has no copy
	// LoadedFrom is where_to_read: a node, or "nowhere".
	LoadedFrom     string
	ActiveReplicas []string
	DiscCopies     []string
	RAMCopies      []string
	MasterNodes    []string
}

// View reads node's view of the cluster, with tabs described in detail.
//
//	migctl_cluster:view(Tabs) -> {ok, [{Key, Value}]}, with the keys
//	    node, connected, hidden: atom lists; is_running: atom;
//	    recorder: the {ok, ...} of recorder_info/1 (see Cluster.RecorderInfo);
//	    db_nodes, running_db_nodes: atom lists; tables: [TableView];
//	  and, while Mnesia runs, also
//	    cookie: binary; schema_location, use_dir, all_tables;
//	    master_nodes: [{Tab, [Node]}].
//	TableView = {Tab, Storage, Size, WhereToRead, ActiveReplicas,
//	             DiscCopies, RamCopies, MasterNodes}
func (s Cluster) View(ctx context.Context, node string, tabs []string) (View, error) {
	const fun = "view"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(tabs))
	if err != nil {
		return View{}, err
	}
	return m.viewReply(node, fun, t)
}

func (m module) viewReply(node, fun string, t etf.Tuple) (View, error) {
	if err := m.okN(node, fun, t, 1); err != nil {
		return View{}, err
	}
	v, err := parseView(t[1])
	if err != nil {
		return View{}, m.shape(node, fun, err.Error())
	}
	return v, nil
}

// parseView reads view/1's property list; the error says which part is
// wrong. Keys it does not know are skipped: the view may grow.
func parseView(x etf.Term) (View, error) {
	l, ok := x.(etf.List)
	if !ok {
		return View{}, fmt.Errorf("properties: %v", x)
	}
	p := map[string]etf.Term{}
	for _, e := range l {
		kv, ok := e.(etf.Tuple)
		if !ok || len(kv) != 2 || asAtom(kv[0]) == "" {
			return View{}, fmt.Errorf("property %v", e)
		}
		p[asAtom(kv[0])] = kv[1]
	}
	var v View
	var err error
	if v.IsRunning = asAtom(p["is_running"]); v.IsRunning == "" {
		return View{}, fmt.Errorf("is_running %v", p["is_running"])
	}
	if c, ok := p["cookie"]; ok {
		b, ok := c.([]byte)
		if !ok {
			return View{}, fmt.Errorf("cookie %v", c)
		}
		v.Cookie = string(b)
	}
	for _, f := range []struct {
		key string
		dst *[]string
	}{{"connected", &v.Connected}, {"db_nodes", &v.DBNodes}, {"running_db_nodes", &v.RunningDBNodes}} {
		if *f.dst, err = atomStrings(p[f.key]); err != nil {
			return View{}, fmt.Errorf("%s: %w", f.key, err)
		}
	}
	if v.Recorder, err = parseRecorder(p["recorder"]); err != nil {
		return View{}, fmt.Errorf("recorder: %w", err)
	}
	tl, ok := p["tables"].(etf.List)
	if !ok {
		return View{}, fmt.Errorf("tables %v", p["tables"])
	}
	for _, x := range tl {
		tv, err := parseViewTable(x)
		if err != nil {
			return View{}, fmt.Errorf("table %v: %w", x, err)
		}
		v.Tables = append(v.Tables, tv)
	}
	if mn, ok := p["master_nodes"]; ok {
		ml, ok := mn.(etf.List)
		if !ok {
			return View{}, fmt.Errorf("master_nodes %v", mn)
		}
		for _, x := range ml {
			e, ok := x.(etf.Tuple)
			if !ok || len(e) != 2 || asAtom(e[0]) == "" {
				return View{}, fmt.Errorf("master_nodes entry %v", x)
			}
			ns, err := atomStrings(e[1])
			if err != nil {
				return View{}, fmt.Errorf("master_nodes of %s: %w", asAtom(e[0]), err)
			}
			if v.MasterNodes == nil {
				v.MasterNodes = map[string][]string{}
			}
			v.MasterNodes[asAtom(e[0])] = ns
		}
	}
	return v, nil
}

func parseViewTable(x etf.Term) (ViewTable, error) {
	t, ok := x.(etf.Tuple)
	if !ok || len(t) != 8 {
		return ViewTable{}, errors.New("not an 8-tuple")
	}
	tv := ViewTable{Name: asAtom(t[0]), Storage: asAtom(t[1]), LoadedFrom: asAtom(t[3])}
	size, ok := erlInt(t[2])
	if !ok || tv.Name == "" || tv.Storage == "" || tv.LoadedFrom == "" {
		return ViewTable{}, errors.New("name, storage, size or where_to_read")
	}
	tv.Size = size
	var err error
	for i, dst := range []*[]string{&tv.ActiveReplicas, &tv.DiscCopies, &tv.RAMCopies, &tv.MasterNodes} {
		if *dst, err = atomStrings(t[4+i]); err != nil {
			return ViewTable{}, fmt.Errorf("element %d: %w", 5+i, err)
		}
	}
	return tv, nil
}

// MembershipStep is one step of a membership change as the node reports
// it: What (a table, schema, extra_db_nodes, master_nodes_cleared) and its
// outcome, either an atom (Outcome: done, already) or a list of names
// (Names, with Outcome empty: the nodes joined through, the tables whose
// master nodes were cleared).
type MembershipStep struct {
	What    string
	Outcome string
	Names   []string
}

// Join runs on node, joining it to the cluster through seeds: Mnesia
// started, extra_db_nodes, the schema and tabs made disc_copies there, and
// the wait of up to timeoutMs for tabs to load. Steps already done are
// reported as such.
//
//	migctl_cluster:join(Seeds, Tabs, Timeout) -> {ok, [{What, done | already | [Name]}]}
func (s Cluster) Join(ctx context.Context, node string, seeds, tabs []string, timeoutMs int64) ([]MembershipStep, error) {
	return s.steps(ctx, node, "join", atoms(seeds), atoms(tabs), int(timeoutMs))
}

// DelCopies runs on node, a node that stays, and drops drop's copies of
// tabs (while drop still runs Mnesia: Mnesia refuses to drop a disc copy it
// cannot reach).
//
//	migctl_cluster:del_copies(Node, Tabs) -> {ok, [{Tab, done | already}]}
func (s Cluster) DelCopies(ctx context.Context, node, drop string, tabs []string) ([]MembershipStep, error) {
	return s.steps(ctx, node, "del_copies", etf.Atom(drop), atoms(tabs))
}

// DelSchema runs on node, a node that stays, and drops drop's schema copy
// (which takes it out of db_nodes), once drop has Mnesia stopped; until
// then it fails with node_still_running_mnesia.
//
//	migctl_cluster:del_schema(Node) -> {ok, [{schema, done | already}]}
func (s Cluster) DelSchema(ctx context.Context, node, drop string) ([]MembershipStep, error) {
	return s.steps(ctx, node, "del_schema", etf.Atom(drop))
}

func (s Cluster) steps(ctx context.Context, node, fun string, args ...etf.Term) ([]MembershipStep, error) {
	m := s.mod()
	t, err := m.call(ctx, node, fun, args...)
	if err != nil {
		return nil, err
	}
	return m.stepsReply(node, fun, t)
}

func (m module) stepsReply(node, fun string, t etf.Tuple) ([]MembershipStep, error) {
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	st, err := parseSteps(t[1])
	if err != nil {
		return nil, m.shape(node, fun, err.Error())
	}
	return st, nil
}

func parseSteps(x etf.Term) ([]MembershipStep, error) {
	l, ok := x.(etf.List)
	if !ok {
		return nil, fmt.Errorf("steps %v", x)
	}
	var out []MembershipStep
	for _, e := range l {
		t, ok := e.(etf.Tuple)
		if !ok || len(t) != 2 || asAtom(t[0]) == "" {
			return nil, fmt.Errorf("step %v", e)
		}
		st := MembershipStep{What: asAtom(t[0]), Outcome: asAtom(t[1])}
		if st.Outcome == "" {
			ns, err := atomStrings(t[1])
			if err != nil {
				return nil, fmt.Errorf("step %v: %w", e, err)
			}
			st.Names = ns
		}
		out = append(out, st)
	}
	return out, nil
}

// StopMnesia stops Mnesia on node (the Erlang VM keeps running).
//
//	migctl_cluster:stop_mnesia() -> {ok, stopped}
func (s Cluster) StopMnesia(ctx context.Context, node string) error {
	return s.okAtom(ctx, node, "stop_mnesia", "stopped")
}

// PrepareReload is the first half of making node take masters' copy of
// every table: the master nodes set and Mnesia stopped (started first if
// it was not running).
//
//	migctl_cluster:prepare_reload(Masters) -> {ok, stopped}
func (s Cluster) PrepareReload(ctx context.Context, node string, masters []string) error {
	return s.okAtom(ctx, node, "prepare_reload", "stopped", atoms(masters))
}

// Reload states of a node (ReloadState).
const (
	ReloadRunning = "running"        // Mnesia runs
	ReloadStopped = "reload_stopped" // stopped by PrepareReload, not started since
	ReloadOther   = "stopped"        // stopped otherwise (or the node restarted since)
)

// ReloadState says whether Mnesia runs on node and, if not, whether
// PrepareReload stopped it.
//
//	migctl_cluster:reload_state() -> {ok, running | reload_stopped | stopped}
func (s Cluster) ReloadState(ctx context.Context, node string) (string, error) {
	const fun = "reload_state"
	m := s.mod()
	t, err := m.call(ctx, node, fun)
	if err != nil {
		return "", err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return "", err
	}
	switch a := asAtom(t[1]); a {
	case ReloadRunning, ReloadStopped, ReloadOther:
		return a, nil
	}
	return "", m.shape(node, fun, t)
}

// FinishReload is the second half: Mnesia started on node (its tables
// load from the master nodes), up to timeoutMs waited for tabs, the master
// nodes cleared. millis is how long it all took; detail says how (for the
// operator).
//
//	migctl_cluster:finish_reload(Tabs, Timeout) -> {ok, Millis, Detail :: binary()}
func (s Cluster) FinishReload(ctx context.Context, node string, tabs []string, timeoutMs int64) (millis int64, detail string, err error) {
	const fun = "finish_reload"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(tabs), int(timeoutMs))
	if err != nil {
		return 0, "", err
	}
	return m.reloadReply(node, fun, t)
}

func (m module) reloadReply(node, fun string, t etf.Tuple) (millis int64, detail string, err error) {
	if err := m.okN(node, fun, t, 2); err != nil {
		return 0, "", err
	}
	ms, ok := erlInt(t[1])
	d, ok2 := t[2].([]byte)
	if !ok || !ok2 {
		return 0, "", m.shape(node, fun, t)
	}
	return ms, string(d), nil
}

// Forwarder starts a process on node that sends to every Mnesia system
// event and node up/down of node as {tag, ...} (read them with
// ParseClusterEvent); it exits when to goes away. pid is for
// ForwarderStop.
//
//	migctl_cluster:forwarder(To, Tag) -> {ok, Pid}
func (s Cluster) Forwarder(ctx context.Context, node string, to erl.Pid, tag string) (pid erl.Pid, err error) {
	const fun = "forwarder"
	m := s.mod()
	t, err := m.call(ctx, node, fun, to, etf.Atom(tag))
	if err != nil {
		return erl.Pid{}, err
	}
	return m.pidReply(node, fun, t)
}

func (m module) pidReply(node, fun string, t etf.Tuple) (erl.Pid, error) {
	if err := m.okN(node, fun, t, 1); err != nil {
		return erl.Pid{}, err
	}
	p, ok := t[1].(etf.Pid)
	if !ok {
		return erl.Pid{}, m.shape(node, fun, t)
	}
	return p, nil
}

// ForwarderStop stops the forwarder pid on node and waits until it is
// gone, so that unloading the agent right after finds no process running
// its code.
//
//	migctl_cluster:forwarder_stop(Pid) -> {ok, stopped}
func (s Cluster) ForwarderStop(ctx context.Context, node string, pid erl.Pid) error {
	return s.okAtom(ctx, node, "forwarder_stop", "stopped", pid)
}

// Connect has node connect to each of nodes explicitly (dist_auto_connect
// once, and prevent_overlapping_partitions, leave pairs unconnected after a
// split); the result says, per node, whether net_kernel:connect_node/1
// succeeded. node itself is left out.
//
//	migctl_cluster:connect(Nodes) -> {ok, [{Node, true | false}]}
func (s Cluster) Connect(ctx context.Context, node string, nodes []string) (map[string]bool, error) {
	const fun = "connect"
	m := s.mod()
	t, err := m.call(ctx, node, fun, atoms(nodes))
	if err != nil {
		return nil, err
	}
	return m.connectReply(node, fun, t)
}

func (m module) connectReply(node, fun string, t etf.Tuple) (map[string]bool, error) {
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	l, ok := t[1].(etf.List)
	if !ok {
		return nil, m.shape(node, fun, t)
	}
	out := make(map[string]bool, len(l))
	for _, x := range l {
		e, ok := x.(etf.Tuple)
		if !ok || len(e) != 2 || asAtom(e[0]) == "" {
			return nil, m.shape(node, fun, t)
		}
		b, ok := erlBool(e[1])
		if !ok {
			return nil, m.shape(node, fun, t)
		}
		out[asAtom(e[0])] = b
	}
	return out, nil
}

// okAtom calls fun and checks the reply is {ok, want}.
func (s Cluster) okAtom(ctx context.Context, node, fun, want string, args ...etf.Term) error {
	m := s.mod()
	t, err := m.call(ctx, node, fun, args...)
	if err != nil {
		return err
	}
	return m.okAtomReply(node, fun, want, t)
}

func (m module) okAtomReply(node, fun, want string, t etf.Tuple) error {
	if err := m.okN(node, fun, t, 1); err != nil {
		return err
	}
	if asAtom(t[1]) != want {
		return m.shape(node, fun, t)
	}
	return nil
}

// ClusterEvent is one message of a forwarder: a Mnesia system event or a
// node up/down seen on Node.
type ClusterEvent struct {
	Node string
	// Kind: inconsistent_database, mnesia_down, mnesia_up,
	// mnesia_overload, nodeup, nodedown, subscribed, unsubscribed, ...
	Kind string
	Peer string // the node the event names; empty when none
	Text string // the event as the node printed it (bounded)
}

// ParseClusterEvent reads a forwarder's message,
//
//	{Tag, Node, Kind :: atom(), Peer :: atom() | none, Text :: binary()}
//
// ok is false for any other message.
func ParseClusterEvent(msg erl.Term) (e ClusterEvent, ok bool) {
	t, ok := msg.(etf.Tuple)
	if !ok || len(t) != 5 {
		return ClusterEvent{}, false
	}
	e = ClusterEvent{Node: asAtom(t[1]), Kind: asAtom(t[2]), Peer: asAtom(t[3])}
	text, tok := t[4].([]byte)
	if e.Node == "" || e.Kind == "" || e.Peer == "" || !tok {
		return ClusterEvent{}, false
	}
	if e.Peer == "none" {
		e.Peer = ""
	}
	e.Text = string(text)
	return e, true
}

// ParseNodeDown reads the message erl.Client sends its "nodedown"
// subscribers when the connection to a node is lost, {nodedown, Node};
// ok is false for any other message.
func ParseNodeDown(msg erl.Term) (node string, ok bool) {
	t, ok := msg.(etf.Tuple)
	if !ok || len(t) != 2 || t[0] != etf.Atom("nodedown") || asAtom(t[1]) == "" {
		return "", false
	}
	return asAtom(t[1]), true
}

// Mnesia is the stub of the plain Mnesia calls migctl makes over rpc (no
// agent involved: they work before the agent is loaded and on a node
// without it).
type Mnesia struct{ C *erl.Client }

// IsRunning reads mnesia:system_info(is_running) on node: yes, no,
// starting or stopping.
//
//	mnesia:system_info(is_running) -> yes | no | starting | stopping
func (s Mnesia) IsRunning(ctx context.Context, node string) (string, error) {
	const fun = "system_info"
	v, err := s.C.Call(ctx, node, "mnesia", fun, etf.Atom("is_running"))
	if err != nil {
		return "", err
	}
	return isRunningReply(module{c: s.C, name: "mnesia"}, node, fun, v)
}

func isRunningReply(m module, node, fun string, v etf.Term) (string, error) {
	if a := asAtom(v); a != "" {
		return a, nil
	}
	return "", m.shape(node, fun, v)
}

// atomStrings reads a list of atoms.
func atomStrings(x etf.Term) ([]string, error) {
	l, ok := x.(etf.List)
	if !ok {
		return nil, fmt.Errorf("not a list: %v", x)
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		a, ok := e.(etf.Atom)
		if !ok {
			return nil, fmt.Errorf("not an atom: %v", e)
		}
		out = append(out, string(a))
	}
	return out, nil
}

// erlInt reads an integer, telling a non-integer apart (asInt reads it
// as 0).
func erlInt(x etf.Term) (int64, bool) {
	switch x.(type) {
	case int, int64, int32, int16, int8, uint64, uint32, uint16, uint8:
		return asInt(x), true
	}
	return 0, false
}

// erlBool reads true or false, which ergo decodes as a Go bool (or, from
// an older ergo, as the atoms).
func erlBool(x etf.Term) (v, ok bool) {
	switch b := x.(type) {
	case bool:
		return b, true
	case etf.Atom:
		return b == "true", b == "true" || b == "false"
	}
	return false, false
}
