package migrate

import (
	"context"
	"fmt"
)

// SchemaOptions tune CreateSchema.
type SchemaOptions struct {
	// Force deletes an existing schema (and every table in it) first.
	Force  bool
	DryRun bool
	Reason string
}

// SchemaNode is one node's schema state.
type SchemaNode struct {
	Node          string `json:"node"`
	HasSchema     bool   `json:"has_schema"`
	MnesiaRunning bool   `json:"mnesia_running"`
}

// SchemaReport is CreateSchema's answer.
type SchemaReport struct {
	Nodes   []SchemaNode `json:"nodes"`
	Action  string       `json:"action"` // created, recreated, dry-run
	Seq     uint64       `json:"seq,omitempty"`
	Tables  []TableState `json:"tables,omitempty"`
	Comment string       `json:"comment,omitempty"`
}

// TableState is one table CreateTables made or found.
type TableState struct {
	Table string `json:"table"`
	State string `json:"state"` // created, exists
}

// SchemaState reports whether each node has a Mnesia disc schema.
func (m *Migrator) SchemaState(ctx context.Context) ([]SchemaNode, error) {
	got, err := m.api().SchemaState(ctx, m.nodes[0], m.nodes)
	if err != nil {
		return nil, err
	}
	var out []SchemaNode
	for _, n := range got {
		out = append(out, SchemaNode{Node: n.Node, HasSchema: n.HasSchema, MnesiaRunning: n.MnesiaRunning})
	}
	return out, nil
}

// CreateSchema makes a Mnesia disc schema on every node (mnesia is stopped
// and started again on each). It refuses when a node already has one,
// unless Force: an existing schema holds the cluster's tables.
func (m *Migrator) CreateSchema(ctx context.Context, o SchemaOptions) (*SchemaReport, error) {
	for _, n := range m.nodes {
		if err := m.c.Connect(ctx, n); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNodeDown, err)
		}
	}
	nodes, err := m.SchemaState(ctx)
	if err != nil {
		return nil, err
	}
	rep := &SchemaReport{Nodes: nodes, Action: "created"}
	var have []string
	for _, n := range nodes {
		if n.HasSchema {
			have = append(have, n.Node)
		}
	}
	if len(have) > 0 {
		if !o.Force {
			return rep, fmt.Errorf("%w: a Mnesia schema exists on %v; migctl will not touch it (pass --delete-existing-schema to delete it and every table in it)", ErrExists, have)
		}
		rep.Action = "recreated"
		rep.Comment = fmt.Sprintf("deleted the existing schema on %v", have)
	}
	if o.DryRun {
		rep.Action = "dry-run: would be " + rep.Action
		return rep, nil
	}
	if err := m.api().CreateSchema(ctx, m.nodes[0], m.nodes, o.Force); err != nil {
		return rep, err
	}
	rep.Seq, err = m.j.Append(KindSchema, o.Reason, map[string]any{"op": "schema create", "nodes": m.nodes, "action": rep.Action})
	return rep, err
}

// TablesOptions tune CreateTables.
type TablesOptions struct {
	// SessionTable is erlmcp's Mnesia session table (default erlmcp_session).
	SessionTable string
	DryRun       bool
	Reason       string
}

// CreateTables creates the session table (erlmcp's layout) and the
// hybrid's phase table as disc_copies on every node. Existing tables are
// accepted if their attributes match; a table of the same name with
// another layout is refused (ErrNotSessions).
func (m *Migrator) CreateTables(ctx context.Context, o TablesOptions) (*SchemaReport, error) {
	if o.SessionTable == "" {
		o.SessionTable = "erlmcp_session"
	}
	nodes, err := m.SchemaState(ctx)
	if err != nil {
		return nil, err
	}
	rep := &SchemaReport{Nodes: nodes, Action: "tables"}
	for _, n := range nodes {
		if !n.MnesiaRunning {
			return rep, fmt.Errorf("%w: mnesia is not running on %s (migctl schema create first)", ErrNodeDown, n.Node)
		}
	}
	if o.DryRun {
		rep.Action = "dry-run"
		rep.Tables = []TableState{{o.SessionTable, "would be created unless it exists"}, {"migctl_migration", "would be created unless it exists"}}
		return rep, nil
	}
	tables, err := m.api().CreateTables(ctx, m.nodes[0], m.nodes, o.SessionTable)
	if err != nil {
		if isReason(err, "not_session_table") {
			return rep, fmt.Errorf("%w: a table named %s exists with another layout", ErrNotSessions, o.SessionTable)
		}
		return rep, err
	}
	for _, t := range tables {
		rep.Tables = append(rep.Tables, TableState{Table: t.Table, State: t.State})
	}
	rep.Seq, err = m.j.Append(KindSchema, o.Reason, map[string]any{"op": "tables create", "nodes": m.nodes, "tables": rep.Tables})
	return rep, err
}
