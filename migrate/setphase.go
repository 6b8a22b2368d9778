package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/erl"
)

// Journal entry kinds and state keys written by this package.
const (
	KindPhaseChange = "phase_change"
	KindBackfill    = "backfill"
	KindArchive     = "archive"
	KindSchema      = "schema"
	KindPersistence = "verify_persistence"

	stateBucket = "migrate"
	keyPending  = "pending_change"
	keyBaseline = "phase2_baseline"
)

// DefaultMaxReadErrorRate is the runbook's gate for phase3: 0.01 %.
const DefaultMaxReadErrorRate = 0.0001

// DefaultMinReads is the phase3 gate's minimum of reads from the new store:
// a rate under 0.01 % means something only once one error would exceed it,
// i.e. from 10,000 reads on; "0 errors in 2 reads" is no evidence.
const DefaultMinReads = 10000

// ChangeOptions tune SetPhase.
type ChangeOptions struct {
	// Percent of sessions read from the secondary in phase2 (0..100;
	// anything else is refused with ErrBadPercent). Ignored for the other
	// phases.
	Percent int
	// Force overrides a failed gate, a skipped phase or a mixed cluster;
	// it is journaled.
	Force bool
	// DryRun plans and checks, and changes nothing.
	DryRun bool
	// Reason is journaled.
	Reason string
	// MaxReadErrorRate gates phase3 (default DefaultMaxReadErrorRate).
	MaxReadErrorRate float64
	// MinReads is how many reads from the new store the phase3 gate needs
	// before it judges the error rate (0: DefaultMinReads; negative: no
	// minimum).
	MinReads int64
	// PromReadsQuery counts the reads in the Prometheus gate's window
	// (default DefaultPromReadsQuery).
	PromReadsQuery string
	// Prometheus, when set, is the base URL of a Prometheus server the
	// phase3 gate reads the read-error rate from instead of the counters.
	Prometheus string
	// PromQuery overrides the query (see DefaultPromQuery).
	PromQuery string

	// noFallback is set by Rollback from phase3.
	noFallback bool
}

// Gate is one checked precondition.
type Gate struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Value  string `json:"value"`
	Forced bool   `json:"forced,omitempty"`
}

// ChangeRecord is a phase change as journaled and reported.
type ChangeRecord struct {
	Seq         uint64 `json:"seq,omitempty"`
	Op          string `json:"op"` // set, rollback, recover
	From        Phase  `json:"from"`
	FromPercent int    `json:"from_percent"`
	To          Phase  `json:"to"`
	ToPercent   int    `json:"to_percent"`
	Epoch       int64  `json:"epoch"`
	// FromNoFallback / NoFallback: phase2 without fallback to the primary.
	FromNoFallback bool      `json:"from_no_fallback,omitempty"`
	NoFallback     bool      `json:"no_fallback,omitempty"`
	NewEpoch       int64     `json:"new_epoch,omitempty"`
	Mode           string    `json:"mode"`
	Nodes          []string  `json:"nodes"`
	Gates          []Gate    `json:"gates,omitempty"`
	Forced         bool      `json:"forced,omitempty"`
	DryRun         bool      `json:"dry_run,omitempty"`
	State          string    `json:"state"` // planned, committed, reverted, failed, aborted, unchanged, dry-run
	Switched       []string  `json:"switched,omitempty"`
	Reverted       []string  `json:"reverted,omitempty"`
	Error          string    `json:"error,omitempty"`
	Started        time.Time `json:"started"`
	CommitMs       float64   `json:"commit_ms,omitempty"`
	Note           string    `json:"note,omitempty"`
}

// Summary says in one line what happened.
func (r *ChangeRecord) Summary() string {
	s := fmt.Sprintf("%s/%d%% -> %s/%d%% on %d node(s): %s", r.From, r.FromPercent, r.To, r.ToPercent, len(r.Nodes), r.State)
	if len(r.Switched) > 0 {
		s += "; switched " + strings.Join(r.Switched, ", ")
	}
	if len(r.Reverted) > 0 {
		s += "; reverted " + strings.Join(r.Reverted, ", ")
	}
	if r.Error != "" {
		s += "; " + r.Error
	}
	return s
}

func (m *Migrator) pendingSeq() (uint64, bool) {
	var seq uint64
	ok, err := m.j.GetState(stateBucket, keyPending, &seq)
	return seq, ok && err == nil
}

// SetPhase plans a change to phase to, checks its preconditions and commits
// it on every node or on none.
func (m *Migrator) SetPhase(ctx context.Context, to Phase, o ChangeOptions) (*ChangeRecord, error) {
	return m.setPhase(ctx, "set", to, o)
}

func (m *Migrator) setPhase(ctx context.Context, op string, to Phase, o ChangeOptions) (*ChangeRecord, error) {
	if !to.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPhase, int(to))
	}
	pct := o.Percent
	if to != Phase2 {
		pct = 100
	}
	if pct < 0 || pct > 100 {
		return nil, fmt.Errorf("%w: percent %d (want 0..100)", ErrBadPercent, pct)
	}
	if err := m.bind(ctx); err != nil {
		return nil, err
	}
	if _, err := m.Recover(ctx); err != nil {
		return nil, fmt.Errorf("an unfinished change in the journal could not be settled: %w", err)
	}
	st := m.status(ctx)
	rec := &ChangeRecord{Op: op, To: to, ToPercent: pct, Nodes: m.Nodes(), Started: time.Now().UTC(), DryRun: o.DryRun, NoFallback: o.noFallback}
	if len(st.Down) > 0 || len(st.NotInstalled) > 0 {
		return rec, st.Ready()
	}
	rec.From, rec.FromPercent, rec.Epoch, rec.Mode, rec.FromNoFallback = st.Phase, st.Percent, st.Epoch, st.Mode, !st.Fallback
	if err := m.notPartitioned(ctx, st); err != nil {
		rec.State = "refused"
		return rec, err
	}
	if st.Mixed {
		if !o.Force {
			return rec, st.Ready()
		}
		rec.Forced = true
		rec.Note = "cluster was mixed; forced"
	}
	if d := int(to) - int(st.Phase); d > 1 || d < -1 {
		if !o.Force {
			return rec, fmt.Errorf("%w: %s -> %s; go one phase at a time, or pass --force", ErrSkipPhase, st.Phase, to)
		}
		rec.Forced = true
	}
	if to == Phase2 && !o.noFallback {
		// Coming back from phase3, the old store still holds what phase3
		// deleted and lacks what it wrote until the reverse backfill has
		// run: phase2's fallback to it after a miss would serve a deleted
		// session and copy it back into the new store. The fallback stays
		// off until then (a lower percentage is gated, see gates).
		if pending, _ := m.reversePending(st); pending {
			o.noFallback = true
			rec.NoFallback = true
			rec.Note = strings.TrimPrefix(rec.Note+"; phase2 without the fallback to the old store until the reverse backfill is complete (migctl backfill --reverse)", "; ")
		}
	}
	if to == st.Phase && pct == st.Percent && st.Fallback == !o.noFallback && !st.Mixed {
		rec.State = "unchanged"
		return rec, nil
	}
	rec.Gates = m.gates(ctx, st, to, pct, o)
	var failed []string
	for i := range rec.Gates {
		if !rec.Gates[i].OK {
			if o.Force {
				rec.Gates[i].Forced = true
				rec.Forced = true
			} else {
				failed = append(failed, rec.Gates[i].Name+" ("+rec.Gates[i].Value+")")
			}
		}
	}
	if len(failed) > 0 {
		rec.State = "refused"
		return rec, fmt.Errorf("%w: %s; pass --force to override (journaled)", ErrGate, strings.Join(failed, "; "))
	}
	if o.DryRun {
		rec.State = "dry-run"
		return rec, nil
	}
	return rec, m.commit(ctx, rec, st, o.Reason)
}

// notPartitioned refuses a change while the Mnesia cluster is split: the
// phase row is replicated by Mnesia, so the transaction would commit on the
// island of the first node only (and say so), and the heal would later
// keep one island's phase and silently drop the other's. Not forceable:
// heal first (migctl cluster heal), then change the phase.
func (m *Migrator) notPartitioned(ctx context.Context, st ClusterStatus) error {
	if st.Mode != "mnesia" {
		return nil
	}
	cl, err := cluster.New(m.c, cluster.Options{Nodes: m.nodes, Logger: m.log})
	if err != nil {
		return err
	}
	cs, err := cl.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the Mnesia cluster's state before the change: %w", err)
	}
	if cs.Verdict != cluster.Partitioned {
		return nil
	}
	var islands []string
	for _, is := range cs.Islands {
		islands = append(islands, "["+strings.Join(is, " ")+"]")
	}
	return fmt.Errorf("%w: Mnesia runs as islands %s, a phase change would reach one of them only; heal it first (migctl cluster status, migctl cluster heal), nothing was changed",
		ErrPartitioned, strings.Join(islands, " "))
}

// commit journals the plan, switches the nodes and journals the result.
func (m *Migrator) commit(ctx context.Context, rec *ChangeRecord, st ClusterStatus, reason string) error {
	rec.State = "planned"
	seq, err := m.j.Append(KindPhaseChange, reason, rec)
	if err != nil {
		return err
	}
	rec.Seq = seq
	if err := m.j.PutState(stateBucket, keyPending, seq); err != nil {
		return err
	}
	if err := m.step("commit:planned"); err != nil {
		return err
	}
	t0 := time.Now()
	err = m.switchNodes(ctx, rec, st)
	rec.CommitMs = float64(time.Since(t0).Microseconds()) / 1000
	if err != nil && rec.State == "" {
		rec.State = "failed"
	}
	if err != nil {
		rec.Error = err.Error()
	}
	if errors.Is(err, errInterrupted) {
		// As a crash: the pending mark stays for Recover.
		return err
	}
	if rec.State == "committed" && rec.To == Phase2 {
		m.saveBaseline(ctx)
	}
	if uerr := m.j.Update(seq, rec); uerr != nil && err == nil {
		err = uerr
	}
	if derr := m.j.DeleteState(stateBucket, keyPending); derr != nil && err == nil {
		err = derr
	}
	return err
}

var errInterrupted = errors.New("interrupted")

// switchNodes applies rec. Mnesia mode: one transaction on the first node
// changes the replicated row for all, then every node must report the new
// epoch. File mode: node by node; on a failure the switched ones go back.
func (m *Migrator) switchNodes(ctx context.Context, rec *ChangeRecord, st ClusterStatus) error {
	if rec.Mode == "mnesia" {
		e, err := m.setOn(ctx, m.nodes[0], rec.To, rec.ToPercent, rec.Epoch, !rec.NoFallback)
		if err != nil {
			rec.State = "failed"
			return err
		}
		rec.NewEpoch = e
		if err := m.step("commit:after-first"); err != nil {
			return errors.Join(errInterrupted, err)
		}
		if err := m.awaitEpoch(ctx, e); err != nil {
			// The row is replicated by Mnesia; a node not seeing it is a
			// Mnesia problem, reported, not something to revert blindly.
			rec.State = "committed"
			rec.Switched = m.Nodes()
			return fmt.Errorf("committed, but: %w", err)
		}
		rec.State = "committed"
		rec.Switched = m.Nodes()
		return nil
	}
	for i, ns := range st.Nodes {
		if i > 0 {
			if err := m.step("commit:node"); err != nil {
				return errors.Join(errInterrupted, err)
			}
		}
		e, err := m.setOn(ctx, ns.Node, rec.To, rec.ToPercent, ns.Epoch, !rec.NoFallback)
		if err != nil {
			rec.State = "reverted"
			for _, done := range st.Nodes[:i] {
				if _, rerr := m.setOn(context.WithoutCancel(ctx), done.Node, rec.From, rec.FromPercent, done.Epoch+1, !rec.FromNoFallback); rerr != nil {
					rec.State = "failed"
					return fmt.Errorf("switching %s failed (%v) and reverting %s failed too: %w; the cluster is mixed, run migctl phase show", ns.Node, err, done.Node, rerr)
				}
				rec.Reverted = append(rec.Reverted, done.Node)
			}
			return fmt.Errorf("switching %s failed, every node is back at %s: %w", ns.Node, rec.From, err)
		}
		rec.Switched = append(rec.Switched, ns.Node)
		rec.NewEpoch = e
	}
	rec.State = "committed"
	return nil
}

func (m *Migrator) setOn(ctx context.Context, node string, p Phase, pct int, epoch int64, fallback bool) (int64, error) {
	e, err := m.api().SetPhase(ctx, node, p.String(), pct, epoch, fallback)
	if err != nil {
		var re *erl.RPCError
		if errors.As(err, &re) && re.Reason == "epoch_mismatch" {
			return 0, fmt.Errorf("%w on %s: someone changed the phase since it was read; look at migctl phase show and retry", ErrConflict, node)
		}
		return 0, err
	}
	return e, nil
}

func (m *Migrator) awaitEpoch(ctx context.Context, e int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := m.status(ctx)
		behind := []string{}
		for _, n := range st.Nodes {
			if n.Epoch < e {
				behind = append(behind, n.Node)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w: %s still report an older phase", ErrMixed, strings.Join(behind, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Recover settles a change left unfinished by a migctl that died: if every
// node reports the target, it is recorded as committed; if every node is
// still at the origin, as aborted; a mixed cluster (file mode, died between
// two nodes) is put back to the origin. It returns the settled record, or
// nil when nothing was pending.
func (m *Migrator) Recover(ctx context.Context) (*ChangeRecord, error) {
	seq, ok := m.pendingSeq()
	if !ok {
		return nil, nil
	}
	e, err := m.j.Get(seq)
	if err != nil {
		return nil, err
	}
	var rec ChangeRecord
	if err := e.Decode(&rec); err != nil {
		return nil, err
	}
	rec.Seq = seq
	st := m.status(ctx)
	if len(st.Down) > 0 || len(st.NotInstalled) > 0 {
		return &rec, st.Ready()
	}
	// A node is at the target or the origin by phase, percentage and
	// fallback: a change of the fallback alone has the same phase and
	// percentage on both sides. In Mnesia mode the epoch tells as well:
	// the phase row still at the planned epoch was not switched.
	atTo, atFrom := 0, 0
	for _, n := range st.Nodes {
		switch {
		case rec.Mode == "mnesia" && n.Epoch == rec.Epoch &&
			n.Phase == rec.From && n.Percent == rec.FromPercent && n.Fallback == !rec.FromNoFallback:
			atFrom++
		case n.Phase == rec.To && n.Percent == rec.ToPercent && n.Fallback == !rec.NoFallback:
			atTo++
		case n.Phase == rec.From && n.Percent == rec.FromPercent && n.Fallback == !rec.FromNoFallback:
			atFrom++
		}
	}
	switch {
	case atTo == len(st.Nodes):
		rec.State = "committed"
		rec.Switched = m.Nodes()
		rec.NewEpoch = st.Epoch
		rec.Note = "finished by recovery: every node had switched"
		if rec.To == Phase2 {
			m.saveBaseline(ctx)
		}
	case atFrom == len(st.Nodes):
		rec.State = "aborted"
		rec.Note = "settled by recovery: no node had switched"
	default:
		rec.Reverted = nil
		for _, n := range st.Nodes {
			if n.Phase == rec.From && n.Percent == rec.FromPercent && n.Fallback == !rec.FromNoFallback {
				continue
			}
			if _, err := m.setOn(ctx, n.Node, rec.From, rec.FromPercent, n.Epoch, !rec.FromNoFallback); err != nil {
				return &rec, fmt.Errorf("recovery could not revert %s: %w", n.Node, err)
			}
			rec.Reverted = append(rec.Reverted, n.Node)
		}
		rec.State = "reverted"
		rec.Note = "reverted by recovery: the change had reached only some nodes"
	}
	m.log.Warn("settled an unfinished phase change", "seq", seq, "state", rec.State, "from", rec.From, "to", rec.To)
	if err := m.j.Update(seq, rec); err != nil {
		return &rec, err
	}
	return &rec, m.j.DeleteState(stateBucket, keyPending)
}

// Rollback goes one phase back. From phase3 it switches to phase2 at 100 %
// and then runs the reverse backfill (new → old), so the old store gets
// everything written after the cut-over; from phase2 it first finishes a
// reverse backfill left pending by an interrupted rollback.
func (m *Migrator) Rollback(ctx context.Context, o ChangeOptions, bo BackfillOptions) (*ChangeRecord, *BackfillReport, error) {
	if err := m.bind(ctx); err != nil {
		return nil, nil, err
	}
	if _, err := m.Recover(ctx); err != nil {
		return nil, nil, err
	}
	st := m.status(ctx)
	if err := st.Ready(); err != nil && !(o.Force && errors.Is(err, ErrMixed)) {
		return nil, nil, err
	}
	bo.Reverse = true
	bo.Reason = o.Reason
	bo.DryRun = o.DryRun
	switch st.Phase {
	case Phase0:
		return nil, nil, fmt.Errorf("%w: already at phase0, nothing to roll back", ErrWrongPhase)
	case Phase3:
		o.Percent = 100
		o.noFallback = true
		rec, err := m.setPhase(ctx, "rollback", Phase2, o)
		if err != nil || o.DryRun {
			return rec, nil, err
		}
		rep, err := m.Backfill(ctx, bo)
		return rec, rep, err
	case Phase2:
		var rep *BackfillReport
		if need, _ := m.reverseNeeded(); need {
			var err error
			if rep, err = m.Backfill(ctx, bo); err != nil {
				return nil, rep, err
			}
		}
		rec, err := m.setPhase(ctx, "rollback", Phase1, o)
		return rec, rep, err
	default:
		rec, err := m.setPhase(ctx, "rollback", st.Phase-1, o)
		if err != nil || o.DryRun {
			return rec, nil, err
		}
		// The way back from a backfill with ReplicateAfter that did not
		// finish: the replicas it removed come back with the rollback.
		p, err := m.PendingReplicas()
		if err != nil || p == nil {
			return rec, nil, err
		}
		return rec, &BackfillReport{Replicas: p}, m.restoreReplicas(ctx, p, 0, o.Reason)
	}
}
