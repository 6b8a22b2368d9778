package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// Phase is a phase of the hybrid backend.
type Phase int

// The four phases.
const (
	Phase0 Phase = iota // primary only
	Phase1              // dual-write, read primary
	Phase2              // dual-write, read secondary (percentage)
	Phase3              // secondary only
)

// ParsePhase accepts phase0..phase3 (or 0..3).
func ParsePhase(s string) (Phase, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "phase0", "0":
		return Phase0, nil
	case "phase1", "1":
		return Phase1, nil
	case "phase2", "2":
		return Phase2, nil
	case "phase3", "3":
		return Phase3, nil
	}
	return 0, fmt.Errorf("%w: %q (want phase0, phase1, phase2 or phase3)", ErrUnknownPhase, s)
}

// String is "phase0".."phase3".
func (p Phase) String() string { return fmt.Sprintf("phase%d", int(p)) }

// Valid tells whether p is one of the four phases.
func (p Phase) Valid() bool { return p >= Phase0 && p <= Phase3 }

// MarshalJSON writes the phase as "phaseN".
func (p Phase) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads "phaseN".
func (p *Phase) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParsePhase(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// StoreRef names one side of the hybrid on a node.
type StoreRef struct {
	Kind  backends.Kind `json:"kind"`
	Table string        `json:"table"`
}

// Spec is the backends.Spec of the side (DETS: the table the application
// has open).
func (s StoreRef) Spec() backends.Spec { return backends.Spec{Kind: s.Kind, Table: s.Table} }

// NodeStatus is what one node reports.
type NodeStatus struct {
	Node      string `json:"node"`
	Reachable bool   `json:"reachable"`
	Installed bool   `json:"installed"`
	Backend   string `json:"backend,omitempty"`
	Phase     Phase  `json:"phase"`
	Percent   int    `json:"percent"`
	Epoch     int64  `json:"epoch"`
	// Fallback: phase2 falls back to the primary after a secondary miss
	// (off after a rollback from phase3, see Rollback).
	Fallback  bool             `json:"fallback"`
	Mode      string           `json:"mode,omitempty"` // mnesia or file
	Primary   StoreRef         `json:"primary"`
	Secondary StoreRef         `json:"secondary"`
	Counters  map[string]int64 `json:"counters,omitempty"`
	// DualWritesPending: phase1 writes acknowledged and not yet applied
	// to the node's Mnesia side (the hybrid defers them while Mnesia
	// holds the table, e.g. while a replica is added).
	DualWritesPending int64  `json:"dual_writes_pending"`
	Error             string `json:"error,omitempty"`
}

// ClusterStatus is ShowPhase's answer.
type ClusterStatus struct {
	Nodes        []NodeStatus `json:"nodes"`
	Phase        Phase        `json:"phase"`
	Percent      int          `json:"percent"`
	Epoch        int64        `json:"epoch"`
	Fallback     bool         `json:"fallback"`
	Mode         string       `json:"mode"`
	Mixed        bool         `json:"mixed"`
	Down         []string     `json:"down,omitempty"`
	NotInstalled []string     `json:"not_installed,omitempty"`
	// Pending is a phase change found unfinished in the journal.
	Pending *ChangeRecord `json:"pending,omitempty"`
}

// Ready tells whether every node answers, runs the hybrid and agrees.
func (s ClusterStatus) Ready() error {
	if len(s.Down) > 0 {
		return fmt.Errorf("%w: %s (a phase change needs every node: bring it back or remove it from --nodes)", ErrNodeDown, strings.Join(s.Down, ", "))
	}
	if len(s.NotInstalled) > 0 {
		return fmt.Errorf("%w on %s: configure {session_backend, erlmcp_session_backend_hybrid} with primary_backend and secondary_backend, and restart the application", ErrNotInstalled, strings.Join(s.NotInstalled, ", "))
	}
	if s.Mixed {
		var parts []string
		for _, n := range s.Nodes {
			parts = append(parts, fmt.Sprintf("%s=%s/%d%%", n.Node, n.Phase, n.Percent))
		}
		return fmt.Errorf("%w: %s (fix it with --force to the intended phase)", ErrMixed, strings.Join(parts, " "))
	}
	return nil
}

// Config configures a Migrator.
type Config struct {
	Client  *erl.Client
	Nodes   []string
	Journal *journal.Journal
	Logger  *slog.Logger
	// StepHook, when set, is called at the named steps of a phase change
	// ("commit:planned": journaled, no node switched yet;
	// "commit:after-first": the first node switched; "commit:node": before
	// each further node in file mode) and of a backfill
	// ("backfill:batch:NODE"). An error stops the operation there as a
	// crash would. For fault injection: tests, and the CLI's
	// MIGCTL_FAILPOINT.
	StepHook func(step string) error
}

// Migrator runs migrations on one cluster. It keeps no state between calls
// besides its configuration: everything durable is in the journal and on
// the nodes, so a new Migrator (a new migctl process) picks up where an
// old one stopped.
type Migrator struct {
	c     *erl.Client
	nodes []string
	j     *journal.Journal
	log   *slog.Logger
	// hook, when set (tests), is called at named steps; an error stops the
	// operation there as a crash would.
	hook func(step string) error
}

// New checks the configuration. It does not contact the nodes.
func New(cfg Config) (*Migrator, error) {
	if cfg.Client == nil {
		return nil, errors.New("migrate: no erl client")
	}
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("migrate: no nodes")
	}
	if cfg.Journal == nil {
		return nil, errors.New("migrate: no journal")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	nodes := append([]string(nil), cfg.Nodes...)
	return &Migrator{c: cfg.Client, nodes: nodes, j: cfg.Journal, log: cfg.Logger, hook: cfg.StepHook}, nil
}

// Nodes are the configured nodes.
func (m *Migrator) Nodes() []string { return append([]string(nil), m.nodes...) }

func (m *Migrator) step(name string) error {
	if m.hook == nil {
		return nil
	}
	return m.hook(name)
}

// ShowPhase asks every node for its phase, percentage and counters.
func (m *Migrator) ShowPhase(ctx context.Context) (ClusterStatus, error) {
	st := m.status(ctx)
	var pend ChangeRecord
	if seq, ok := m.pendingSeq(); ok {
		if e, err := m.j.Get(seq); err == nil && e.Decode(&pend) == nil {
			pend.Seq = seq
			st.Pending = &pend
		}
	}
	return st, nil
}

func (m *Migrator) status(ctx context.Context) ClusterStatus {
	out := make([]NodeStatus, len(m.nodes))
	var wg sync.WaitGroup
	for i, n := range m.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = m.nodeStatus(ctx, n)
		}()
	}
	wg.Wait()
	st := ClusterStatus{Nodes: out}
	first := true
	for _, n := range out {
		switch {
		case !n.Reachable:
			st.Down = append(st.Down, n.Node)
		case !n.Installed:
			st.NotInstalled = append(st.NotInstalled, n.Node)
		case first:
			st.Phase, st.Percent, st.Epoch, st.Mode, st.Fallback = n.Phase, n.Percent, n.Epoch, n.Mode, n.Fallback
			first = false
		case n.Phase != st.Phase || n.Percent != st.Percent:
			st.Mixed = true
		}
	}
	return st
}

func (m *Migrator) nodeStatus(ctx context.Context, node string) NodeStatus {
	ns := NodeStatus{Node: node}
	st, err := m.api().Status(ctx, node)
	if err != nil {
		var re *erl.RPCError
		switch {
		case errors.As(err, &re) && re.Reason == "store_starting":
			// Down for the migration until its store server has started
			// (a phase change needs it), and said why.
			ns.Error = "the store server is still starting (after a crash erlmcp's DETS file is repaired first; retry when it is done)"
			return ns
		case errors.As(err, &re):
			// The node answers, but its store server does not.
			ns.Reachable = true
		}
		ns.Error = err.Error()
		return ns
	}
	ns.Reachable = true
	ns.Installed, ns.Backend, ns.Percent, ns.Epoch = st.Installed, st.Backend, st.Percent, st.Epoch
	ns.Fallback, ns.Mode, ns.Counters = st.Fallback, st.Mode, st.Counters
	ns.DualWritesPending = st.DualWritesPending
	ns.Phase, _ = ParsePhase(st.Phase)
	ns.Primary = StoreRef{Kind: backends.Kind(st.Primary.Kind), Table: st.Primary.Table}
	ns.Secondary = StoreRef{Kind: backends.Kind(st.Secondary.Kind), Table: st.Secondary.Table}
	return ns
}

// api is the stub of the agent module this package drives.
func (m *Migrator) api() agentapi.Migrate { return agentapi.Migrate{C: m.c} }

// clusterID identifies the cluster for the journal: the Mnesia schema's
// cookie when the nodes run Mnesia (the same names rebuilt are another
// cluster), else the sorted node names.
func (m *Migrator) clusterID(ctx context.Context) (string, error) {
	var id string
	for _, n := range m.nodes {
		b, ok, err := m.api().ClusterID(ctx, n)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrNodeDown, n, err)
		}
		if !ok {
			continue // no mnesia there
		}
		if id == "" {
			id = b
		} else if id != b {
			return "", fmt.Errorf("%w: nodes belong to different Mnesia clusters", ErrMixed)
		}
	}
	if id != "" {
		return "mnesia:" + id, nil
	}
	names := append([]string(nil), m.nodes...)
	sort.Strings(names)
	return "nodes:" + strings.Join(names, ","), nil
}

// bind ties the journal to this cluster; a journal of another cluster is
// refused before anything is changed.
func (m *Migrator) bind(ctx context.Context) error {
	id, err := m.clusterID(ctx)
	if err != nil {
		return err
	}
	return m.j.Bind(id)
}
