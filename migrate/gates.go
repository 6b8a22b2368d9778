package migrate

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// gates checks what a change to (to, pct) needs from the cluster in st.
func (m *Migrator) gates(ctx context.Context, st ClusterStatus, to Phase, pct int, o ChangeOptions) []Gate {
	var gs []Gate
	if to == Phase2 || to == Phase3 {
		// A backfill with ReplicateAfter left replicas of the session
		// table removed: the application would read from fewer replicas
		// than the cluster was built with.
		p, err := m.PendingReplicas()
		switch {
		case err != nil:
			gs = append(gs, Gate{Name: "session_replicas_back", OK: false, Value: "journal: " + err.Error()})
		case p != nil:
			gs = append(gs, Gate{Name: "session_replicas_back", OK: false,
				Value: fmt.Sprintf("%s has one replica (%s); %s removed by a backfill are not back: rerun the backfill", p.Table, p.Loader, copyList(p.Removed))})
		}
	}
	if (to == Phase2 || to == Phase3) && st.Phase < Phase2 {
		// Phase1's writes to the new store may be queued on a node (the
		// hybrid defers them while Mnesia holds the table): reading the
		// new store before they are applied would serve older sessions.
		gs = append(gs, m.dualWritesGate(ctx, st))
	}
	if to == Phase2 && st.Phase < Phase2 {
		ok, val := m.backfillDone(st, "forward")
		gs = append(gs, Gate{Name: "backfill_complete", OK: ok, Value: val})
	}
	if to == Phase3 {
		gs = append(gs, Gate{Name: "phase2_at_100_percent", OK: st.Phase == Phase2 && st.Percent == 100,
			Value: fmt.Sprintf("%s at %d%%", st.Phase, st.Percent)})
		max := o.MaxReadErrorRate
		if max <= 0 {
			max = DefaultMaxReadErrorRate
		}
		minReads := o.MinReads
		if minReads == 0 {
			minReads = DefaultMinReads
		}
		var g Gate
		if o.Prometheus != "" {
			g = promGate(ctx, o.Prometheus, o.PromQuery, o.PromReadsQuery, max, minReads)
		} else {
			g = m.counterGate(ctx, st, max, minReads)
		}
		gs = append(gs, g)
	}
	if to == Phase2 && pct < 100 {
		// Below 100 % the other sessions are read from the old store,
		// which after phase3 lacks its writes and still holds its deletes.
		if pending, val := m.reversePending(st); pending {
			gs = append(gs, Gate{Name: "reverse_backfill_complete", OK: false, Value: val})
		}
	}
	if to == Phase1 && st.Phase == Phase2 {
		need, val := m.reverseNeeded()
		gs = append(gs, Gate{Name: "reverse_backfill_complete", OK: !need, Value: val})
	}
	return gs
}

// BackfillRecord is a backfill as journaled.
type BackfillRecord struct {
	Direction string   `json:"direction"` // forward (old → new) or reverse
	Nodes     []string `json:"nodes"`
	Phase     Phase    `json:"phase"`
	Epoch     int64    `json:"epoch"`
	Complete  bool     `json:"complete"`
	DryRun    bool     `json:"dry_run,omitempty"`
	Stats     Stats    `json:"stats"`
	Resumed   bool     `json:"resumed,omitempty"`
	// ResumedAt is how many sessions the checkpoints had already scanned.
	ResumedAt int64   `json:"resumed_at,omitempty"`
	Seconds   float64 `json:"seconds"`
	Error     string  `json:"error,omitempty"`
	// FailuresAtStart are the nodes' secondary_write_failures counters when
	// it started (for a node whose pass it resumed from a checkpoint, when
	// that pass started): a later failure means the new store may miss a
	// write the backfill did not see, and phase2 is refused until another
	// one.
	FailuresAtStart map[string]int64 `json:"secondary_write_failures_at_start,omitempty"`
}

// backfillDone: a complete forward backfill over every node of this
// cluster, journaled after the last switch from phase0 to phase1 (a
// backfill made before dual-writes started would miss later writes).
func (m *Migrator) backfillDone(st ClusterStatus, dir string) (bool, string) {
	es, err := m.j.List("", 0)
	if err != nil {
		return false, "journal: " + err.Error()
	}
	var since uint64
	for _, e := range es {
		if e.Kind != KindPhaseChange {
			continue
		}
		var r ChangeRecord
		if e.Decode(&r) == nil && r.State == "committed" && r.To == Phase1 && r.From == Phase0 {
			since = e.Seq
		}
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if e.Seq <= since {
			break
		}
		var b BackfillRecord
		if e.Kind != KindBackfill || e.Decode(&b) != nil || b.Direction != dir || !b.Complete || b.DryRun || b.Phase < Phase1 {
			continue
		}
		if covers(b.Nodes, m.nodes) {
			if msg := failuresSince(st, b.FailuresAtStart); msg != "" {
				return false, fmt.Sprintf("journal #%d, but %s: run migctl backfill again", e.Seq, msg)
			}
			return true, fmt.Sprintf("journal #%d: %d written, %d skipped", e.Seq, b.Stats.Written, b.Stats.Skipped)
		}
	}
	return false, "no complete " + dir + " backfill of every node since dual-writes began (run migctl backfill)"
}

// failuresSince says which nodes had secondary write failures since the
// counters in at were read ("" when none), from the status the gates were
// computed on (no second round trip, and the caller's deadline governs the
// one there was). A counter below its start means the node restarted and
// lost the count: that cannot be vouched for either.
func failuresSince(st ClusterStatus, at map[string]int64) string {
	if at == nil {
		return ""
	}
	var bad []string
	for _, n := range st.Nodes {
		cur, start := n.Counters["secondary_write_failures"], at[n.Node]
		switch {
		case cur > start:
			bad = append(bad, fmt.Sprintf("%s had %d secondary write failure(s) since it started", n.Node, cur-start))
		case cur < start:
			bad = append(bad, fmt.Sprintf("%s restarted since it started (its failure count was reset)", n.Node))
		}
	}
	return strings.Join(bad, "; ")
}

func covers(have, want []string) bool {
	set := map[string]bool{}
	for _, n := range have {
		set[n] = true
	}
	for _, n := range want {
		if !set[n] {
			return false
		}
	}
	return true
}

// reverseNeeded: the last rollback 3 → 2 is not yet followed by a complete
// reverse backfill.
func (m *Migrator) reverseNeeded() (bool, string) {
	es, err := m.j.List("", 0)
	if err != nil {
		return true, "journal: " + err.Error()
	}
	var rb uint64
	for _, e := range es {
		var r ChangeRecord
		if e.Kind == KindPhaseChange && e.Decode(&r) == nil && r.State == "committed" {
			if r.From == Phase3 && r.To == Phase2 {
				rb = e.Seq
			} else if r.To == Phase3 {
				rb = 0
			}
		}
	}
	if rb == 0 {
		return false, "no rollback from phase3 pending"
	}
	for _, e := range es {
		var b BackfillRecord
		if e.Seq > rb && e.Kind == KindBackfill && e.Decode(&b) == nil && b.Direction == "reverse" && b.Complete && !b.DryRun && covers(b.Nodes, m.nodes) {
			return false, fmt.Sprintf("journal #%d", e.Seq)
		}
	}
	return true, fmt.Sprintf("rolled back from phase3 (journal #%d) but the reverse backfill is not complete (run migctl backfill --reverse)", rb)
}

// reversePending tells whether the old store must first be brought up to
// date from the new one: the cluster is at phase3, or a rollback from
// phase3 is not yet followed by a complete reverse backfill.
func (m *Migrator) reversePending(st ClusterStatus) (bool, string) {
	if st.Phase == Phase3 {
		return true, "the cluster is at phase3: the old store lacks what phase3 wrote and still holds what it deleted; " +
			"go back with migctl phase rollback (phase2 at 100 % without the fallback, then the reverse backfill), then lower --percent"
	}
	if st.Phase == Phase2 {
		return m.reverseNeeded()
	}
	return false, ""
}

// saveBaseline records the counters when phase2 is entered, so the phase3
// gate measures the read errors of phase2 only.
func (m *Migrator) saveBaseline(ctx context.Context) {
	st := m.status(ctx)
	base := map[string]map[string]int64{}
	for _, n := range st.Nodes {
		if n.Counters != nil {
			base[n.Node] = n.Counters
		}
	}
	if err := m.j.PutState(stateBucket, keyBaseline, base); err != nil {
		m.log.Warn("saving the phase2 counter baseline", "err", err)
	}
}

// ReadErrorRate sums read errors and secondary reads over the nodes since
// phase2 was entered (a node whose counters went down restarted: its
// counters count from zero).
func (m *Migrator) ReadErrorRate(ctx context.Context) (rate float64, errs, reads int64, err error) {
	return m.readErrorRate(m.status(ctx))
}

func (m *Migrator) readErrorRate(st ClusterStatus) (float64, int64, int64, error) {
	base := map[string]map[string]int64{}
	if _, err := m.j.GetState(stateBucket, keyBaseline, &base); err != nil {
		return 0, 0, 0, err
	}
	var errs, reads int64
	delta := func(node, k string, cur int64) int64 {
		b := base[node][k]
		if cur < b {
			return cur
		}
		return cur - b
	}
	for _, n := range st.Nodes {
		errs += delta(n.Node, "read_errors", n.Counters["read_errors"])
		reads += delta(n.Node, "secondary_reads", n.Counters["secondary_reads"])
	}
	if reads == 0 {
		return 0, errs, reads, nil
	}
	return float64(errs) / float64(reads), errs, reads, nil
}

func (m *Migrator) counterGate(_ context.Context, st ClusterStatus, max float64, minReads int64) Gate {
	g := Gate{Name: "read_error_rate"}
	rate, errs, reads, err := m.readErrorRate(st)
	switch {
	case err != nil:
		g.Value = err.Error()
	case reads == 0:
		g.Value = "no reads from the secondary since phase2 began: nothing to judge by"
	case reads < minReads:
		g.Value = fmt.Sprintf("not enough reads to judge: %d errors / %d secondary reads since phase2 began, %d needed (--min-reads); wait for traffic at 100 %%", errs, reads, minReads)
	default:
		g.OK = rate < max
		g.Value = fmt.Sprintf("%.4f%% (%d errors / %d secondary reads, limit %.4f%%, from the nodes' counters)", rate*100, errs, reads, max*100)
	}
	return g
}

// CountersTable renders counters in a stable order (for the CLI).
func CountersTable(c map[string]int64) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	return b.String()
}

// dualWritesWait is how long the dual_writes_applied gate waits for a
// node's backlog to drain before it refuses: once Mnesia releases the
// table, a backlog of a few hundred writes is gone in well under a second.
const dualWritesWait = 10 * time.Second

// dualWritesGate: no node has phase1 dual-writes acknowledged and not yet
// applied to its Mnesia side. A node that has some (phase set right after
// a replica was added back, say) is asked again until they are applied or
// dualWritesWait has passed.
func (m *Migrator) dualWritesGate(ctx context.Context, st ClusterStatus) Gate {
	pending := map[string]int64{}
	for _, n := range st.Nodes {
		if n.DualWritesPending > 0 {
			pending[n.Node] = n.DualWritesPending
		}
	}
	deadline := time.Now().Add(dualWritesWait)
	for len(pending) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			deadline = time.Now()
			continue
		case <-time.After(200 * time.Millisecond):
		}
		for node := range pending {
			if ns := m.nodeStatus(ctx, node); ns.Error == "" {
				if ns.DualWritesPending == 0 {
					delete(pending, node)
				} else {
					pending[node] = ns.DualWritesPending
				}
			}
		}
	}
	if len(pending) == 0 {
		return Gate{Name: "dual_writes_applied", OK: true, Value: "none queued"}
	}
	var queued []string
	for node, n := range pending {
		queued = append(queued, fmt.Sprintf("%s has %d", node, n))
	}
	sort.Strings(queued)
	return Gate{Name: "dual_writes_applied", OK: false,
		Value: strings.Join(queued, "; ") + fmt.Sprintf(" dual-write(s) not yet applied to the new store after %s (Mnesia is holding the table, e.g. a replica being added); retry when they are", dualWritesWait)}
}
