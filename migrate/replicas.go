package migrate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/journal"
)

// Loading one replica and adding the others afterwards
// (BackfillOptions.ReplicateAfter).
//
// Every row a backfill commits to a Mnesia table is applied on each of
// its replicas, one transaction at a time: at 1.4M sessions on five
// disc_copies nodes that was the backfill's ceiling (each replica used a
// third of a core; ~550 rows/s end to end on two cores). Mnesia's own
// table copy (mnesia:add_table_copy) moves a whole table in bulk from a
// live replica and keeps the new one in step with the commits made
// meanwhile: on this machine a 200k-row table copied in ~2 s, where the
// same rows committed to three replicas took 75 s and to one 2.3 s.
//
// The price: while a new disc_copies replica writes the whole table to
// its disc (mnesia_loader's last step, ets2dcd), Mnesia blocks commits to
// the table on every node (where_to_commit is {blocked, _} until the
// receiver is done), dirty writes included: measured here ~2 s of a 3 s
// copy at 400k sessions, and at 1.4-1.8M under traffic long enough that
// erlmcp's 5 s store calls timed out while phase1's dual-write held the
// store server. Adding a ram_copies replica does not block, but converting
// it to disc_copies blocks as long (a table write lock). Nothing in
// Mnesia's API adds a disc replica of a large table without that pause,
// so the hybrid backend does not wait for it: in phase1 it acknowledges a
// write once the old store (the one read) has it and hands the Mnesia
// side to a writer process of its node, which applies the writes in order
// when Mnesia lets go (erlmcp_session_backend_hybrid, "deferred
// dual-writes"; the phase2 gate dual_writes_applied waits for them).
// ReplicateAfter stays an option: the default backfill never removes a
// replica.
//
// So with ReplicateAfter the backfill removes every replica of the
// session table but one (the loader: the node whose old store holds the
// most sessions, whose batches then commit locally), copies into it, and
// adds the others back. This is safe only while the application reads
// the old store (phase1): the Mnesia side holds copies of what the old
// store has, the dual-writes of every node go to the loader's replica
// meanwhile, and losing the loader costs a backfill, not sessions (the
// dual-writes that fail are counted, and the phase2 gate refuses them).
// The replicas removed are saved in the journal first; until they are
// back, phase2 and phase3 are refused, and the next backfill adds them
// back (at its start, or at its end when it runs with ReplicateAfter
// again).

// replicasKey is the journal state key of the replicas removed by a
// backfill with ReplicateAfter and not yet added back.
const replicasKey = "replicas"

// ReplicaCopy is one replica of the session table.
type ReplicaCopy struct {
	Node string `json:"node"`
	Type string `json:"type"` // disc_copies, ram_copies, disc_only_copies
}

// ReplicaPlan is what a backfill with ReplicateAfter did (or, dry-run,
// would do) to the session table's replicas.
type ReplicaPlan struct {
	Table   string        `json:"table"`
	Loader  string        `json:"loader"`
	Removed []ReplicaCopy `json:"removed"`
	// Added are the replicas added back (node → seconds of Mnesia's copy).
	Added       map[string]float64 `json:"added_seconds,omitempty"`
	DropSeconds float64            `json:"remove_seconds,omitempty"`
	AddSeconds  float64            `json:"add_seconds,omitempty"`
	// Pending: the removed replicas are not all back (see the journal
	// state; the next backfill adds them).
	Pending bool     `json:"pending,omitempty"`
	Steps   []string `json:"plan,omitempty"`
}

// PendingReplicas returns the replicas a backfill removed and has not
// added back, or nil.
func (m *Migrator) PendingReplicas() (*ReplicaPlan, error) { return ReadPendingReplicas(m.j) }

// ReadPendingReplicas reads them from the journal alone (backfill status).
func ReadPendingReplicas(j *journal.Journal) (*ReplicaPlan, error) {
	var p ReplicaPlan
	ok, err := j.GetState(stateBucket, replicasKey, &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

// sessionTable is the Mnesia side's table of a forward backfill.
func sessionTable(st ClusterStatus) (string, error) {
	var tab string
	for _, n := range st.Nodes {
		if n.Secondary.Kind != backends.KindMnesia {
			return "", fmt.Errorf("%w: %s's new store is %s, not Mnesia: loading one replica applies to Mnesia only", ErrWrongPhase, n.Node, n.Secondary.Kind)
		}
		if tab != "" && n.Secondary.Table != tab {
			return "", fmt.Errorf("nodes disagree on the Mnesia table (%s, %s)", tab, n.Secondary.Table)
		}
		tab = n.Secondary.Table
	}
	return tab, nil
}

// planReplicas chooses the loader and the replicas to remove. sizes are
// the sessions each node's old store holds; prefer (an earlier run's
// loader) is kept as the loader while it holds a disc replica.
func (m *Migrator) planReplicas(ctx context.Context, st ClusterStatus, sizes map[string]int64, prefer string) (*ReplicaPlan, error) {
	if st.Phase != Phase1 {
		return nil, fmt.Errorf("%w: the cluster is at %s; one replica is loaded only in phase1, while the application reads the old store (run the backfill without --replicate-after)", ErrWrongPhase, st.Phase)
	}
	tab, err := sessionTable(st)
	if err != nil {
		return nil, err
	}
	copies, err := m.api().TableCopies(ctx, m.nodes[0], tab)
	if err != nil {
		return nil, err
	}
	var down []string
	var cands []ReplicaCopy
	for _, c := range copies {
		if !c.Running {
			down = append(down, c.Node)
		}
		if c.Type == "disc_copies" && slices.Contains(m.nodes, c.Node) {
			cands = append(cands, ReplicaCopy{Node: c.Node, Type: c.Type})
		}
	}
	if len(down) > 0 {
		return nil, fmt.Errorf("%w: Mnesia is not running on %v, which holds a replica of %s; start it (or remove its replica) before loading one replica", ErrNodeDown, down, tab)
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no node of migctl's node list holds a disc_copies replica of %s", ErrWrongPhase, tab)
	}
	loader := cands[0].Node
	for _, c := range cands[1:] {
		if sizes[c.Node] > sizes[loader] {
			loader = c.Node
		}
	}
	if slices.ContainsFunc(cands, func(c ReplicaCopy) bool { return c.Node == prefer }) {
		loader = prefer
	}
	p := &ReplicaPlan{Table: tab, Loader: loader}
	for _, c := range copies {
		if c.Node != loader {
			p.Removed = append(p.Removed, ReplicaCopy{Node: c.Node, Type: c.Type})
		}
	}
	p.Steps = []string{
		fmt.Sprintf("journal the replicas of %s to remove: %s", tab, copyList(p.Removed)),
		fmt.Sprintf("mnesia:del_table_copy(%s, N) for N in %s (the application reads the old store in phase1)", tab, copyList(p.Removed)),
		fmt.Sprintf("backfill into the one replica on %s", loader),
		fmt.Sprintf("mnesia:add_table_copy(%s, N, Type) for each removed replica, one at a time (Mnesia's bulk copy), and wait until each is loaded; "+
			"while a new replica writes its disc copy, Mnesia holds every commit to %s (clients' writes wait: ~2 s per 400k sessions on an idle 2-core machine, 15-25 s at 1.4M under load)", tab, tab),
	}
	return p, nil
}

func copyList(cs []ReplicaCopy) string {
	if len(cs) == 0 {
		return "[]"
	}
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Node)
		if c.Type != "disc_copies" {
			b.WriteString(" (" + c.Type + ")")
		}
	}
	return "[" + b.String() + "]"
}

// dropReplicas journals p, then removes its replicas. A replica that
// came back since an earlier run journaled p (a node restarted: the
// hybrid adds its replica when it starts) is removed again.
func (m *Migrator) dropReplicas(ctx context.Context, p *ReplicaPlan, reason string) error {
	p.Pending = true
	if err := m.j.PutState(stateBucket, replicasKey, p); err != nil {
		return err
	}
	if _, err := m.j.Append(KindSchema, reason, map[string]any{"op": "remove replicas for the backfill", "table": p.Table,
		"loader": p.Loader, "removed": p.Removed}); err != nil {
		return err
	}
	t0 := time.Now()
	for _, c := range p.Removed {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		dropped, err := m.api().DropCopy(cctx, p.Loader, p.Table, c.Node)
		cancel()
		if err != nil {
			return fmt.Errorf("removing %s's replica of %s: %w (the replicas to remove are journaled: the next backfill adds back those removed)", c.Node, p.Table, err)
		}
		m.log.Info("replica removed for the backfill", "table", p.Table, "node", c.Node, "dropped", dropped)
		if err := m.step("replica-removed"); err != nil {
			return err
		}
	}
	p.DropSeconds = time.Since(t0).Seconds()
	return nil
}

// restoreReplicas adds back every replica p removed, one at a time
// (Mnesia serialises schema changes), and clears the journal state once
// all are back. rows (the table's size; 0: asked) sizes the wait for
// each copy.
func (m *Migrator) restoreReplicas(ctx context.Context, p *ReplicaPlan, rows int64, reason string) error {
	if rows <= 0 {
		s, err := backends.Open(m.c, p.Loader, backends.Spec{Kind: backends.KindMnesia, Table: p.Table})
		if err != nil {
			return err
		}
		info, err := s.Describe(ctx)
		if err != nil {
			return err
		}
		rows = info.Size
	}
	// Mnesia's copy moved ~60k rows/s here; allow for a loaded node.
	wait := 5*time.Minute + time.Duration(rows)*200*time.Microsecond
	t0 := time.Now()
	if p.Added == nil {
		p.Added = map[string]float64{}
	}
	for i, c := range p.Removed {
		if _, done := p.Added[c.Node]; done {
			continue
		}
		m.log.Info("adding a replica back", "table", p.Table, "node", c.Node, "n", i+1, "of", len(p.Removed), "eta", m.copyETA(p, len(p.Removed)-i))
		cctx, cancel := context.WithTimeout(ctx, wait+time.Minute)
		added, took, err := m.api().AddCopy(cctx, p.Loader, p.Table, c.Node, c.Type, wait)
		cancel()
		if err != nil {
			_ = m.j.PutState(stateBucket, replicasKey, p)
			return fmt.Errorf("adding %s's replica of %s back: %w (the table has fewer replicas until a backfill adds it: rerun the backfill, or migctl cluster add-node %s)", c.Node, p.Table, err, c.Node)
		}
		p.Added[c.Node] = took.Seconds()
		m.log.Info("replica added back", "table", p.Table, "node", c.Node, "added", added, "seconds", took.Seconds())
		if err := m.j.PutState(stateBucket, replicasKey, p); err != nil {
			return err
		}
		if err := m.step("replica-added"); err != nil {
			return err
		}
	}
	p.AddSeconds = time.Since(t0).Seconds()
	p.Pending = false
	if _, err := m.j.Append(KindSchema, reason, map[string]any{"op": "add replicas back after the backfill", "table": p.Table,
		"added": p.Added}); err != nil {
		return err
	}
	return m.j.DeleteState(stateBucket, replicasKey)
}

// copyETA: the replicas left times the mean of those added so far.
func (m *Migrator) copyETA(p *ReplicaPlan, left int) string {
	if len(p.Added) == 0 {
		return "unknown until the first is added"
	}
	var sum float64
	for _, s := range p.Added {
		sum += s
	}
	return time.Duration(sum / float64(len(p.Added)) * float64(left) * float64(time.Second)).Round(time.Second).String()
}

// mergeCopies: the replicas an earlier run removed, then those it did not
// list (a node that holds one now), each node once.
func mergeCopies(earlier, now []ReplicaCopy) []ReplicaCopy {
	out := append([]ReplicaCopy(nil), earlier...)
	for _, c := range now {
		if !slices.ContainsFunc(out, func(o ReplicaCopy) bool { return o.Node == c.Node }) {
			out = append(out, c)
		}
	}
	return out
}
