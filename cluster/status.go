package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"
)

// Verdict is the cluster's overall state.
type Verdict string

// Verdicts, from best to worst.
const (
	Healthy     Verdict = "healthy"
	Degraded    Verdict = "degraded"
	Partitioned Verdict = "partitioned"
)

// TableView is one table as one node sees it.
type TableView struct {
	Name    string `json:"name"`
	Storage string `json:"storage"` // disc_copies, ram_copies, disc_only_copies, unknown (no copy here)
	Size    int64  `json:"size"`    // -1 when the node has no copy
	// LoadedFrom is where the node reads the table (where_to_read):
	// itself when its copy is loaded, another node, or "nowhere".
	LoadedFrom     string   `json:"loaded_from"`
	ActiveReplicas []string `json:"active_replicas"`
	DiscCopies     []string `json:"disc_copies"`
	RAMCopies      []string `json:"ram_copies"`
	MasterNodes    []string `json:"master_nodes,omitempty"`
}

// NodeView is one node's own view of the cluster.
type NodeView struct {
	Node      string `json:"node"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Mnesia is mnesia:system_info(is_running): yes, no, starting, stopping.
	Mnesia         string      `json:"mnesia"`
	Connected      []string    `json:"connected"` // nodes(): visible distribution peers
	DBNodes        []string    `json:"db_nodes"`
	RunningDBNodes []string    `json:"running_db_nodes"`
	Tables         []TableView `json:"tables"`
	// MasterNodes lists tables whose master nodes are set (normally none;
	// a heal that stopped half-way can leave them).
	MasterNodes map[string][]string `json:"master_nodes,omitempty"`
	// OverloadEvents counts mnesia_overload events seen by a Watch on this
	// node (Status alone cannot see past events).
	OverloadEvents int `json:"overload_events,omitempty"`
	// SchemaCookie identifies the Mnesia schema (the same on every node
	// of one cluster, split or not; another for a cluster rebuilt under
	// the same names).
	SchemaCookie string `json:"schema_cookie,omitempty"`
	// Recorder is the node's change recorder (migctl_node), which a heal
	// decides from; nil from nodes that could not be read.
	Recorder *RecorderInfo `json:"recorder,omitempty"`
}

// MnesiaRunning tells whether Mnesia runs on the node.
func (v NodeView) MnesiaRunning() bool { return v.Reachable && v.Mnesia == "yes" }

// Split is two nodes that share a schema but do not replicate with each
// other.
type Split struct {
	A string `json:"a"`
	B string `json:"b"`
	// Connected is true when the two are connected at the distribution
	// level all the same: the split brain that nothing reports by itself.
	Connected bool `json:"connected"`
}

// Status is the cluster's state, assembled from every node's own view.
type Status struct {
	Time    time.Time  `json:"time"`
	Verdict Verdict    `json:"verdict"`
	Nodes   []NodeView `json:"nodes"`
	// Islands are groups of nodes that replicate with each other (only
	// nodes with Mnesia running), largest first.
	Islands  [][]string `json:"islands"`
	Splits   []Split    `json:"splits,omitempty"`
	Problems []string   `json:"problems,omitempty"`
}

// TableNames are the session tables the nodes' recorders report on.
func (s *Status) TableNames() []string {
	var out []string
	for _, v := range s.Nodes {
		if v.Recorder != nil {
			for t := range v.Recorder.Since {
				if !slices.Contains(out, t) {
					out = append(out, t)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// Node returns the view of one node.
func (s *Status) Node(name string) (NodeView, bool) {
	for _, v := range s.Nodes {
		if v.Node == name {
			return v, true
		}
	}
	return NodeView{}, false
}

// ClusterID identifies the cluster for the journal, in the form package
// migrate uses ("mnesia:" and the schema cookie), so one journal serves
// every command of one cluster and refuses another's. Empty when no node
// runs Mnesia.
func (s *Status) ClusterID() string {
	for _, v := range s.Nodes {
		if v.SchemaCookie != "" {
			return "mnesia:" + v.SchemaCookie
		}
	}
	return ""
}

// bind ties the journal to the cluster of st before anything changes.
func bind(j interface{ Bind(string) error }, st *Status) error {
	if id := st.ClusterID(); id != "" {
		return j.Bind(id)
	}
	return nil
}

// Status reads every node's view and returns the verdict. Nodes found in a
// reachable node's db_nodes are read too, so a node the operator forgot
// is not overlooked.
func (cl *Cluster) Status(ctx context.Context) (*Status, error) {
	st := &Status{Time: time.Now().UTC()}
	seen := map[string]bool{}
	todo := cl.nodes
	for len(todo) > 0 {
		views := make([]NodeView, len(todo))
		forEach(todo, func(i int, n string) { views[i] = cl.view(ctx, n) })
		for _, n := range todo {
			seen[n] = true
		}
		st.Nodes = append(st.Nodes, views...)
		var more []string
		for _, v := range views {
			for _, d := range v.DBNodes {
				if !seen[d] && !contains(more, d) {
					more = append(more, d)
				}
			}
		}
		todo = more
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Node < st.Nodes[j].Node })
	st.judge()
	return st, nil
}

func (cl *Cluster) view(ctx context.Context, n string) NodeView {
	ctx, cancel := context.WithTimeout(ctx, cl.viewTimeout)
	defer cancel()
	v := NodeView{Node: n, Mnesia: "unknown"}
	r, err := cl.api().View(ctx, n, cl.tables)
	if err != nil {
		v.Error = err.Error()
		// Reachable but the call failed (an agent error): say so apart from
		// a connection failure.
		v.Reachable = cl.c.Connect(ctx, n) == nil
		return v
	}
	v.Reachable = true
	v.Mnesia = r.IsRunning
	v.SchemaCookie = r.Cookie
	ri := recorderInfo(n, r.Recorder)
	v.Recorder = &ri
	// Sorted, so that views compare and print the same whatever order
	// each node keeps its lists in.
	v.Connected = sorted(r.Connected)
	v.DBNodes = sorted(r.DBNodes)
	v.RunningDBNodes = sorted(r.RunningDBNodes)
	for _, t := range r.Tables {
		v.Tables = append(v.Tables, TableView{
			Name: t.Name, Storage: t.Storage, Size: t.Size, LoadedFrom: t.LoadedFrom,
			ActiveReplicas: sorted(t.ActiveReplicas), DiscCopies: sorted(t.DiscCopies), RAMCopies: sorted(t.RAMCopies),
			MasterNodes: sorted(t.MasterNodes),
		})
	}
	for t, m := range r.MasterNodes {
		if len(m) > 0 {
			if v.MasterNodes == nil {
				v.MasterNodes = map[string][]string{}
			}
			v.MasterNodes[t] = sorted(m)
		}
	}
	return v
}

// sorted returns a sorted copy of l, never nil (a node list prints as []
// in JSON, not null).
func sorted(l []string) []string {
	out := append(make([]string, 0, len(l)), l...)
	sort.Strings(out)
	return out
}

// judge computes islands, splits, problems and the verdict.
func (st *Status) judge() {
	byName := map[string]*NodeView{}
	var live []string
	for i := range st.Nodes {
		v := &st.Nodes[i]
		byName[v.Node] = v
		switch {
		case !v.Reachable:
			st.Problems = append(st.Problems, fmt.Sprintf("%s unreachable: %s", v.Node, v.Error))
		case v.Error != "":
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %s", v.Node, v.Error))
		case v.Mnesia != "yes":
			st.Problems = append(st.Problems, fmt.Sprintf("%s: mnesia %s", v.Node, v.Mnesia))
		default:
			live = append(live, v.Node)
			for _, t := range v.Tables {
				if t.Storage != "unknown" && t.LoadedFrom == "nowhere" {
					st.Problems = append(st.Problems, fmt.Sprintf("%s: table %s not loaded", v.Node, t.Name))
				}
			}
			for t, m := range v.MasterNodes {
				st.Problems = append(st.Problems, fmt.Sprintf("%s: master nodes of %s set to %v (left by an unfinished heal?)", v.Node, t, m))
			}
		}
	}
	mutual := func(a, b string) bool {
		return contains(byName[a].RunningDBNodes, b) && contains(byName[b].RunningDBNodes, a)
	}
	// Islands: connected components of the mutual-running relation.
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	for _, n := range live {
		parent[n] = n
	}
	for i, a := range live {
		for _, b := range live[i+1:] {
			if mutual(a, b) {
				parent[find(a)] = find(b)
			}
			if contains(byName[a].DBNodes, b) && contains(byName[b].DBNodes, a) && !mutual(a, b) {
				st.Splits = append(st.Splits, Split{A: a, B: b,
					Connected: contains(byName[a].Connected, b) && contains(byName[b].Connected, a)})
			}
		}
	}
	groups := map[string][]string{}
	for _, n := range live {
		r := find(n)
		groups[r] = append(groups[r], n)
	}
	for _, g := range groups {
		sort.Strings(g)
		st.Islands = append(st.Islands, g)
	}
	sortIslands(st.Islands)
	switch {
	case len(st.Splits) > 0:
		st.Verdict = Partitioned
		for _, s := range st.Splits {
			how := "not connected"
			if s.Connected {
				how = "connected at the distribution level but not replicating"
			}
			st.Problems = append(st.Problems, fmt.Sprintf("split: %s and %s share a schema and are missing from each other's running_db_nodes (%s)", s.A, s.B, how))
		}
	case len(st.Problems) > 0:
		st.Verdict = Degraded
	default:
		st.Verdict = Healthy
	}
}

// sortIslands orders islands largest first, then by first node name.
func sortIslands(is [][]string) {
	sort.Slice(is, func(i, j int) bool {
		if len(is[i]) != len(is[j]) {
			return len(is[i]) > len(is[j])
		}
		return is[i][0] < is[j][0]
	})
}
