package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// ProgressSink receives progress (cmd/migctl's adapter of
// cliutil.Progress is one): SetTotal once, before the first batch, with
// the number of rows the copy will scan, then Add after every call.
type ProgressSink interface {
	SetTotal(n int64)
	Add(n int64)
}

// BackfillOptions tune Backfill.
type BackfillOptions struct {
	// Reverse copies new → old (after a rollback from phase3) and prunes
	// from the old store what the new one no longer has.
	Reverse bool
	// BatchSize is the most sessions per batch (default 500). A batch
	// holds the store server of its node for its duration: while the
	// application's requests queue behind it, batches are sized on the
	// node to take TurnBudget each; on a quiet node they grow to BatchSize.
	BatchSize int
	// TurnBudget is how long one batch may hold a store server while the
	// application's requests wait (default 25 ms).
	TurnBudget time.Duration
	// RatePerSec caps the rows scanned per second over all nodes (0: no cap).
	RatePerSec float64
	// DryRun counts what would be written and writes nothing.
	DryRun bool
	// Reason is journaled.
	Reason string
	// Force runs outside the phases where it is safe (not recommended).
	Force bool
	// Restart ignores a checkpoint and starts from the beginning.
	Restart bool
	// Progress, when set, is told of every batch.
	Progress ProgressSink
	// Limits configure Throttle.
	Limits Limits
	// NoThrottle disables the load collectors (benchmarks).
	NoThrottle bool
	// StepTimeout bounds one batch (default 60 s).
	StepTimeout time.Duration
	// StepRetries is how many times in a row a batch that timed out is
	// tried again before the run stops (default 5; the checkpoint is kept
	// either way). A store server stalls for tens of seconds at a time
	// (erlmcp's own cleanup of a large DETS file runs in it: 18-33 s at
	// 1.4M sessions), and a batch is idempotent, so a stall is waited out.
	StepRetries int
	// ConflictRetries is how many times in a row a batch that gave up on a
	// Mnesia lock conflict is tried again (default 40, ~19 min at the
	// longest pause). A batch does not wait for a table lock in the store
	// server; other transactions can hold locks for minutes (erlmcp's
	// cleanup of many sessions expiring together, on every node).
	ConflictRetries int
	// ReplicateAfter (forward, phase1 only) removes every replica of the
	// Mnesia session table but one before copying and adds them back with
	// Mnesia's bulk table copy afterwards (replicas.go): the rows are then
	// applied on one replica instead of each.
	ReplicateAfter bool
	// CallBudget is how long one call to a node keeps running batches
	// before it reports back (default 250 ms); the checkpoint, the throttle
	// and Ctrl-C act between calls.
	CallBudget time.Duration
}

// Stats count what a backfill did.
type Stats struct {
	Scanned   int64   `json:"scanned"`
	Written   int64   `json:"written"`
	Skipped   int64   `json:"skipped_newer_or_equal"`
	Expired   int64   `json:"expired"`
	Deleted   int64   `json:"pruned"`
	Batches   int64   `json:"batches"`
	Throttled float64 `json:"throttled_seconds"`
	// CallSeconds is the time spent in calls to the node (the rest of the
	// wall time is migctl's own: throttle waits, pacing, checkpoints).
	CallSeconds float64 `json:"call_seconds"`
	Restarts    int64   `json:"cursor_restarts,omitempty"`
	// Retries counts batches tried again after a timeout or a lock conflict.
	Retries int64 `json:"batch_retries,omitempty"`
}

func (s *Stats) add(o Stats) {
	s.Scanned += o.Scanned
	s.Written += o.Written
	s.Skipped += o.Skipped
	s.Expired += o.Expired
	s.Deleted += o.Deleted
	s.Batches += o.Batches
	s.Throttled += o.Throttled
	s.CallSeconds += o.CallSeconds
	s.Restarts += o.Restarts
	s.Retries += o.Retries
}

// BackfillReport is Backfill's answer.
type BackfillReport struct {
	Seq        uint64           `json:"seq,omitempty"`
	Record     BackfillRecord   `json:"record"`
	PerNode    map[string]Stats `json:"per_node"`
	RowsPerSec float64          `json:"rows_per_sec"`
	// LastThrottle is the last reason a batch waited, if any.
	LastThrottle string `json:"last_throttle,omitempty"`
	// Replicas: what ReplicateAfter did to the session table's replicas
	// (also a run that added back replicas an earlier one removed).
	Replicas *ReplicaPlan `json:"replicas,omitempty"`
}

// checkpoint is a node's position, saved in the journal.
type checkpoint struct {
	Pass   string `json:"pass"` // copy or prune
	Cursor []byte `json:"cursor"`
	Stats  Stats  `json:"stats"`
	// Epoch is the phase epoch the pass began in; a checkpoint of another
	// epoch is not resumed (see backfillNode).
	Epoch int64 `json:"epoch"`
	Done  bool  `json:"done"`
	// FailuresAtStart is the node's secondary_write_failures counter when
	// this pass began. A run that resumes the pass (or reuses the node's
	// finished pass) is judged by the phase2 gate from it, not from the
	// counter when the resuming run started: what the pass copied before
	// a failure is not read again, so a failure between the start and the
	// resumption can leave the new store without an acknowledged write.
	// Nil in checkpoints of older versions (the resuming run's counter is
	// used then, as before).
	FailuresAtStart *int64 `json:"secondary_write_failures_at_start,omitempty"`
}

func ckptKey(dir, node string) string { return "ckpt:" + dir + ":" + node }

// Backfill copies every live session of the old store into the new one
// (or back, with Reverse) on every node while the application keeps
// writing both. See the package documentation for why it cannot overwrite
// a newer value or resurrect a deleted one.
func (m *Migrator) Backfill(ctx context.Context, o BackfillOptions) (*BackfillReport, error) {
	o = o.withDefaults()
	dir := "forward"
	if o.Reverse {
		dir = "reverse"
	}
	if err := m.bind(ctx); err != nil {
		return nil, err
	}
	if _, err := m.Recover(ctx); err != nil {
		return nil, err
	}
	st := m.status(ctx)
	if err := st.Ready(); err != nil {
		return nil, err
	}
	if err := backfillPhaseOK(st, dir, o.Force); err != nil {
		return nil, err
	}
	sizes, err := m.backfillSizes(ctx, st, o.Reverse)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	rep := &BackfillReport{PerNode: map[string]Stats{}}
	// Replicas an earlier run removed: added back first, unless this run
	// loads one replica again (then at its end, with the others).
	pending, err := m.PendingReplicas()
	if err != nil {
		return nil, err
	}
	var plan *ReplicaPlan
	switch {
	case o.ReplicateAfter && o.Reverse:
		return nil, fmt.Errorf("%w: --replicate-after is for the forward backfill into Mnesia", ErrWrongPhase)
	case o.ReplicateAfter:
		prefer := ""
		if pending != nil {
			prefer = pending.Loader
		}
		if plan, err = m.planReplicas(ctx, st, sizes, prefer); err != nil {
			return nil, err
		}
		switch {
		case pending == nil:
		case pending.Table == plan.Table && pending.Loader == plan.Loader:
			// Keep what the earlier run removed (and, if a replica came
			// back meanwhile, remove it again).
			plan.Removed = mergeCopies(pending.Removed, plan.Removed)
		case !o.DryRun:
			// The earlier loader lost its replica: the replicas it left
			// removed come back first, and the plan is made again.
			if err := m.restoreReplicas(ctx, pending, total, o.Reason); err != nil {
				return nil, err
			}
			if plan, err = m.planReplicas(ctx, st, sizes, ""); err != nil {
				return nil, err
			}
		}
		rep.Replicas = plan
	case pending != nil && !o.DryRun:
		if err := m.restoreReplicas(ctx, pending, total, o.Reason); err != nil {
			return nil, err
		}
		rep.Replicas = pending
	}
	if plan != nil && !o.DryRun {
		if err := m.dropReplicas(ctx, plan, o.Reason); err != nil {
			return rep, err
		}
	}
	if o.Progress != nil {
		o.Progress.SetTotal(total)
	}
	rec := BackfillRecord{Direction: dir, Nodes: m.Nodes(), Phase: st.Phase, Epoch: st.Epoch, DryRun: o.DryRun,
		FailuresAtStart: map[string]int64{}}
	for _, n := range st.Nodes {
		rec.FailuresAtStart[n.Node] = n.Counters["secondary_write_failures"]
	}
	t0 := time.Now()

	var pw *progressWriter
	if !o.DryRun {
		pw = newProgressWriter(m.j, m.log, dir, total, false)
		pw.save(BackfillRunning, "")
		go pw.run()
	}
	defer pw.stop()
	err = m.backfillNodes(ctx, dir, st.Epoch, o, pw, &rec, rep)
	if plan != nil && !o.DryRun {
		if ctx.Err() != nil || errors.Is(err, errInterrupted) {
			// Adding the replicas back takes minutes at scale: an
			// interrupted run leaves them to the next backfill, and the
			// phase gates refuse phase2 until then.
			m.log.Warn("backfill interrupted with one replica of the session table; the next backfill adds the others back",
				"table", plan.Table, "loader", plan.Loader, "removed", copyList(plan.Removed))
		} else if rerr := m.restoreReplicas(ctx, plan, total, o.Reason); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	rec.Seconds = time.Since(t0).Seconds()
	if rec.Seconds > 0 {
		rep.RowsPerSec = float64(rec.Stats.Scanned) / rec.Seconds
	}
	if err == nil && !o.DryRun {
		// The guarantees hold only if dual-writes flowed the whole time.
		end := m.status(ctx)
		if end.Epoch != st.Epoch && (end.Phase < Phase1 || end.Phase == Phase3) {
			err = fmt.Errorf("%w: the phase changed to %s during the backfill; run it again", ErrWrongPhase, end.Phase)
		}
	}
	rec.Complete = err == nil
	if err != nil {
		rec.Error = err.Error()
	}
	interrupted := errors.Is(err, errInterrupted) || ctx.Err() != nil
	if pw != nil {
		pw.stop() // no periodic save may land after the final one
		switch {
		case rec.Complete:
			pw.save(BackfillDone, "")
		case interrupted:
			pw.save(BackfillInterrupted, "interrupted; rerun to resume from the checkpoint")
		default:
			pw.save(BackfillFailed, rec.Error)
		}
	}
	if rec.Complete || !o.DryRun {
		if interrupted {
			// A crash or Ctrl-C: the checkpoints say where to resume;
			// journal the interruption without marking completion.
			rec.Error = "interrupted; rerun to resume from the checkpoint"
		}
		seq, jerr := m.j.Append(KindBackfill, o.Reason, rec)
		if jerr != nil && err == nil {
			err = jerr
		}
		rep.Seq = seq
	}
	if rec.Complete && !o.DryRun {
		for _, n := range m.nodes {
			_ = m.j.DeleteState(stateBucket, ckptKey(dir, n))
		}
	}
	rep.Record = rec
	return rep, err
}

func (o BackfillOptions) withDefaults() BackfillOptions {
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.StepRetries <= 0 {
		o.StepRetries = 5
	}
	if o.ConflictRetries <= 0 {
		o.ConflictRetries = 40
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = 60 * time.Second
	}
	if o.CallBudget <= 0 {
		o.CallBudget = 250 * time.Millisecond
	}
	if o.TurnBudget <= 0 {
		o.TurnBudget = 25 * time.Millisecond
	}
	return o
}

// backfillPhaseOK: a backfill runs while dual-writes flow (phase1 or
// phase2; the way back in phase2 only), unless forced.
func backfillPhaseOK(st ClusterStatus, dir string, force bool) error {
	ok := st.Phase == Phase1 || st.Phase == Phase2
	want := "phase1 or phase2 (dual-writes must flow while it copies)"
	if dir == "reverse" {
		ok = st.Phase == Phase2
		want = "phase2 (after migctl phase rollback from phase3)"
	}
	if ok || force {
		return nil
	}
	return fmt.Errorf("%w: the cluster is at %s; a %s backfill runs in %s", ErrWrongPhase, st.Phase, dir, want)
}

// backfillSizes checks that every store holds sessions and returns the
// rows the copy will scan on each node (its source side).
func (m *Migrator) backfillSizes(ctx context.Context, st ClusterStatus, reverse bool) (map[string]int64, error) {
	sizes := map[string]int64{}
	for _, n := range st.Nodes {
		for _, side := range []StoreRef{n.Primary, n.Secondary} {
			s, err := backends.Open(m.c, n.Node, side.Spec())
			if err != nil {
				return nil, err
			}
			info, err := s.Describe(ctx)
			if err != nil {
				if errors.Is(err, backends.ErrNotSessions) {
					return nil, fmt.Errorf("%w: %s on %s: %v", ErrNotSessions, side.Spec(), n.Node, err)
				}
				return nil, err
			}
			if info.Exists && info.Layout != "ok" {
				return nil, fmt.Errorf("%w: %s on %s: %s", ErrNotSessions, side.Spec(), n.Node, info.Layout)
			}
			if (side == n.Primary) != reverse {
				sizes[n.Node] += info.Size
			}
		}
	}
	return sizes, nil
}

// backfillNodes runs every node's share at once and gathers the results
// into rec and rep.
func (m *Migrator) backfillNodes(ctx context.Context, dir string, epoch int64, o BackfillOptions, pw *progressWriter, rec *BackfillRecord, rep *BackfillReport) error {
	wctx, stopWatch := context.WithCancel(ctx)
	var watch *loadWatch
	if !o.NoThrottle {
		watch = m.watchLoad(wctx, m.nodes)
	}
	perNodeRate := 0.0
	if o.RatePerSec > 0 {
		perNodeRate = o.RatePerSec / float64(len(m.nodes))
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, node := range m.nodes {
		b := &nodeBackfill{m: m, node: node, dir: dir, epoch: epoch, o: o, rate: perNodeRate, watch: watch, pw: pw,
			ckpt: &checkpointer{j: m.j, key: ckptKey(dir, node), off: o.DryRun}}
		if f, ok := rec.FailuresAtStart[node]; ok {
			b.failures = &f
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := b.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			rep.PerNode[node] = b.cp.Stats
			rec.Stats.add(b.cp.Stats)
			rec.Resumed = rec.Resumed || b.resumed
			rec.ResumedAt += b.resumedAt
			if b.failures != nil {
				rec.FailuresAtStart[node] = *b.failures
			}
			if b.lastReason != "" {
				rep.LastThrottle = b.lastReason
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", node, err))
			}
		}()
	}
	wg.Wait()
	stopWatch()
	if watch != nil {
		watch.wg.Wait()
		for _, n := range m.nodes {
			_ = m.api().StopWatch(context.WithoutCancel(ctx), n)
		}
	}
	return errors.Join(errs...)
}

// nodeBackfill is one node's share of a backfill: its pass (copy, and
// prune after a reverse copy) from its checkpoint on, one call of
// migctl_migrate:backfill_steps after the other, with the throttle and the
// rate limit between calls.
type nodeBackfill struct {
	m     *Migrator
	node  string
	dir   string // forward or reverse
	epoch int64  // the phase epoch the run began in
	o     BackfillOptions
	rate  float64 // rows per second for this node (0: no cap)
	watch *loadWatch
	pw    *progressWriter
	ckpt  *checkpointer
	// failures is the node's secondary_write_failures counter the phase2
	// gate judges from: the run's start, or that of the pass it resumes
	// (see checkpoint.FailuresAtStart).
	failures *int64

	cp         checkpoint
	resumed    bool  // a pass of an interrupted run goes on
	resumedAt  int64 // rows that pass had scanned
	lastReason string
}

// run does the node's share; b.cp.Stats is what it did, also on error.
func (b *nodeBackfill) run(ctx context.Context) error {
	defer b.ckpt.wait()
	finished, err := b.load()
	if err != nil || finished {
		return err
	}
	op := b.dir
	if b.cp.Pass == "prune" {
		op = agentapi.OpPrune
	}
	api := agentapi.Migrate{C: b.m.c}
	start := time.Now()
	var paced int64
	timeouts, conflicts := 0, 0 // in a row
	for {
		if err := ctx.Err(); err != nil {
			return b.stop(err)
		}
		if err := b.throttle(ctx); err != nil {
			return b.stop(err)
		}
		if err := b.pace(ctx, start, paced); err != nil {
			return b.stop(err)
		}
		callStart := time.Now()
		sctx, cancel := context.WithTimeout(ctx, b.o.StepTimeout+b.o.CallBudget)
		r, err := api.BackfillSteps(sctx, b.node, b.request(op))
		cancel()
		if errors.Is(err, agentapi.ErrCursorExpired) {
			// The DETS file was reopened since the checkpoint: start the
			// pass again (batches are idempotent).
			b.m.log.Warn("backfill cursor expired, restarting the pass", "node", b.node, "pass", b.cp.Pass)
			b.cp.Cursor = nil
			b.cp.Stats.Restarts++
			continue
		}
		if ctx.Err() == nil && errors.Is(err, agentapi.ErrBatchConflict) && conflicts < b.o.ConflictRetries {
			conflicts++
			b.cp.Stats.Retries++
			wait := retryWait(conflicts)
			b.m.log.Warn("backfill batch gave up on a Mnesia lock conflict (another transaction holds locks on the table); trying it again",
				"node", b.node, "attempt", conflicts, "of", b.o.ConflictRetries, "wait", wait)
			if err := sleepCtx(ctx, wait); err != nil {
				return b.stop(err)
			}
			continue
		}
		if timedOut(ctx, err) && timeouts < b.o.StepRetries {
			timeouts++
			b.cp.Stats.Retries++
			wait := retryWait(timeouts)
			b.m.log.Warn("backfill batch timed out in the store server; trying it again (batches are idempotent)",
				"node", b.node, "attempt", timeouts, "of", b.o.StepRetries, "wait", wait, "step_timeout", b.o.StepTimeout)
			if err := sleepCtx(ctx, wait); err != nil {
				return b.stop(err)
			}
			continue
		}
		if err != nil {
			if timedOut(ctx, err) {
				err = fmt.Errorf("%w (%d tries in a row; the node's store server is stalled: see what it runs with erlang:process_info(Pid, current_stacktrace); the checkpoint is kept, run the backfill again to resume)", err, timeouts+1)
			}
			if errors.Is(err, agentapi.ErrBatchConflict) {
				err = fmt.Errorf("%w (%d tries in a row; look for long transactions on the table: mnesia:system_info(held_locks) on its nodes; the checkpoint is kept, run the backfill again to resume)", err, conflicts+1)
			}
			return b.stop(err)
		}
		timeouts, conflicts = 0, 0
		s := Stats{Scanned: r.Scanned, Written: r.Written, Skipped: r.Skipped, Expired: r.Expired,
			Deleted: r.Deleted, Batches: 1, CallSeconds: time.Since(callStart).Seconds()}
		b.cp.Stats.add(s)
		b.pw.node(b.node, b.cp.Stats)
		paced += s.Scanned
		if b.o.Progress != nil && op != agentapi.OpPrune {
			b.o.Progress.Add(s.Scanned)
		}
		b.cp.Cursor = r.Next
		if r.Done {
			if b.dir == "reverse" && b.cp.Pass == "copy" {
				b.cp.Pass, b.cp.Cursor, op = "prune", nil, agentapi.OpPrune
				if err := b.ckpt.save(b.cp); err != nil {
					return err
				}
				continue
			}
			b.cp.Done = true
			return b.ckpt.save(b.cp)
		}
		if err := b.ckpt.saveSoon(b.cp); err != nil {
			return err
		}
		if err := b.m.step("backfill:batch:" + b.node); err != nil {
			return b.stop(errors.Join(errInterrupted, err))
		}
	}
}

// load reads the node's checkpoint: finished = the node's pass of this
// epoch is already done (an interrupted run got that far).
func (b *nodeBackfill) load() (finished bool, err error) {
	var cp checkpoint
	if !b.o.Restart && !b.o.DryRun {
		ok, err := b.m.j.GetState(stateBucket, b.ckpt.key, &cp)
		switch {
		case err != nil:
			return false, err
		case ok && cp.Done && cp.Epoch == b.epoch:
			// This node finished in the interrupted run and the phase has
			// not changed since: its copy still holds.
			b.resumeFrom(cp)
			b.pw.node(b.node, cp.Stats)
			return true, nil
		case ok && cp.Epoch != b.epoch:
			// The phase changed since this pass began (phase1 -> phase0 ->
			// phase1, say): writes made meanwhile went to one store only,
			// and those behind the cursor would never be read again. The
			// pass starts over; batches are idempotent.
			b.m.log.Warn("backfill checkpoint from another phase epoch, starting the pass over", "node", b.node,
				"checkpoint_epoch", cp.Epoch, "epoch", b.epoch, "scanned", cp.Stats.Scanned)
			cp = checkpoint{}
		case ok && !cp.Done:
			b.resumeFrom(cp)
			b.m.log.Info("resuming backfill from checkpoint", "node", b.node, "pass", cp.Pass, "scanned", cp.Stats.Scanned)
		default:
			cp = checkpoint{}
		}
	}
	if cp.Pass == "" {
		cp = checkpoint{Pass: "copy", Epoch: b.epoch, FailuresAtStart: b.failures}
	}
	b.cp = cp
	return false, nil
}

// resumeFrom takes over a checkpoint's pass, and the secondary write
// failures it was started with (see checkpoint.FailuresAtStart).
func (b *nodeBackfill) resumeFrom(cp checkpoint) {
	b.cp = cp
	b.resumed = true
	b.resumedAt = cp.Stats.Scanned
	if cp.FailuresAtStart != nil {
		f := *cp.FailuresAtStart
		b.failures = &f
	}
}

// stop saves the checkpoint (best effort) and returns err.
func (b *nodeBackfill) stop(err error) error {
	_ = b.ckpt.save(b.cp)
	return err
}

// throttle waits while the node is loaded.
func (b *nodeBackfill) throttle(ctx context.Context) error {
	if b.watch == nil {
		return nil
	}
	for {
		th, why := Throttle(b.watch.get(b.node), b.o.Limits, time.Now())
		if !th {
			return nil
		}
		if why != b.lastReason {
			b.m.log.Info("backfill throttled", "reason", why)
			b.lastReason = why
		}
		t := time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		b.cp.Stats.Throttled += time.Since(t).Seconds()
	}
}

// pace keeps the node on the line rate*elapsed (no-op without a rate).
func (b *nodeBackfill) pace(ctx context.Context, start time.Time, paced int64) error {
	if b.rate <= 0 {
		return nil
	}
	due := start.Add(time.Duration(float64(paced) / b.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

// request is the next call: several batches (each its own turn of the
// store server), bounded by the call budget and, with a rate limit, by
// what the rate allows in one budget. The way back (reverse, prune) names
// the migration's nodes: each session goes back to the one node that
// serves it (see the hybrid backend's ownership rule), not into every
// node's file.
func (b *nodeBackfill) request(op string) agentapi.StepsRequest {
	maxRows := 1 << 30
	if b.rate > 0 {
		maxRows = max(b.o.BatchSize, int(b.rate*b.o.CallBudget.Seconds()))
	}
	var owners []string
	if op != agentapi.OpForward {
		owners = b.m.nodes
	}
	return agentapi.StepsRequest{Op: op, Cursor: b.cp.Cursor, Batch: b.o.BatchSize, TurnBudget: b.o.TurnBudget,
		DryRun: b.o.DryRun, StepTimeout: b.o.StepTimeout, MaxRows: maxRows, CallBudget: b.o.CallBudget, Owners: owners}
}

// checkpointer saves a node's checkpoint in the journal. Periodic saves
// (saveSoon) run in a goroutine while the next call runs (a bbolt commit
// with fsync costs milliseconds the node would otherwise sit idle), at
// most one a second and one at a time; a crash then resumes at most a
// second earlier, and calls are idempotent. save waits for the one in
// flight first, so an older position never lands after a newer one.
type checkpointer struct {
	j   *journal.Journal
	key string
	off bool // a dry run saves nothing

	last     time.Time
	inflight sync.WaitGroup
	busy     atomic.Bool
	mu       sync.Mutex
	err      error // of the last background save
}

func (c *checkpointer) save(cp checkpoint) error {
	if c.off {
		return nil
	}
	c.inflight.Wait()
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.j.PutState(stateBucket, c.key, cp)
}

func (c *checkpointer) saveSoon(cp checkpoint) error {
	if c.off {
		return nil
	}
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if time.Since(c.last) < time.Second || c.busy.Load() {
		return nil
	}
	c.last = time.Now()
	cp.Cursor = append([]byte(nil), cp.Cursor...)
	c.busy.Store(true)
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		defer c.busy.Store(false)
		if err := c.j.PutState(stateBucket, c.key, cp); err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
		}
	}()
	return nil
}

// wait returns when no save is in flight.
func (c *checkpointer) wait() { c.inflight.Wait() }

// Checkpoints lists the saved backfill positions (for `migctl backfill
// status`).
func (m *Migrator) Checkpoints() (map[string]Stats, error) {
	out := map[string]Stats{}
	err := m.j.ForEachRaw(stateBucket, func(k string, v []byte) error {
		if !strings.HasPrefix(k, "ckpt:") {
			return nil
		}
		var cp checkpoint
		if json.Unmarshal(v, &cp) == nil {
			out[strings.TrimPrefix(k, "ckpt:")] = cp.Stats
		}
		return nil
	})
	return out, err
}

// timedOut: a batch timed out in the store server, or the call to the node
// did (the node answers nothing until the batch ends), while the run
// itself goes on.
func timedOut(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	return errors.Is(err, agentapi.ErrBatchTimeout) || errors.Is(err, erl.ErrTimeout)
}

// retryWait is the pause before the n-th try in a row of a batch that
// timed out or gave up on a lock conflict: 2, 4, 8, ... s, at most 30 s
// (a late batch, still queued in the server, runs meanwhile).
func retryWait(n int) time.Duration {
	d := time.Second << min(n, 5)
	return min(d, 30*time.Second)
}
