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

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
)

// ProgressSink receives progress (*cliutil.Progress is one).
type ProgressSink interface {
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
}

// BackfillReport is Backfill's answer.
type BackfillReport struct {
	Seq        uint64           `json:"seq,omitempty"`
	Record     BackfillRecord   `json:"record"`
	PerNode    map[string]Stats `json:"per_node"`
	RowsPerSec float64          `json:"rows_per_sec"`
	// LastThrottle is the last reason a batch waited, if any.
	LastThrottle string `json:"last_throttle,omitempty"`
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
	if o.BatchSize <= 0 {
		o.BatchSize = 500
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
	okPhase := st.Phase == Phase1 || st.Phase == Phase2
	if o.Reverse {
		okPhase = st.Phase == Phase2
	}
	if !okPhase && !o.Force {
		want := "phase1 or phase2 (dual-writes must flow while it copies)"
		if o.Reverse {
			want = "phase2 (after migctl phase rollback from phase3)"
		}
		return nil, fmt.Errorf("%w: the cluster is at %s; a %s backfill runs in %s", ErrWrongPhase, st.Phase, dir, want)
	}
	var total int64
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
			if (side == n.Primary) != o.Reverse {
				total += info.Size
			}
		}
	}
	if o.Progress != nil {
		if p, ok := o.Progress.(interface{ SetTotal(int64) }); ok {
			p.SetTotal(total)
		}
	}
	rec := BackfillRecord{Direction: dir, Nodes: m.Nodes(), Phase: st.Phase, Epoch: st.Epoch, DryRun: o.DryRun,
		FailuresAtStart: map[string]int64{}}
	for _, n := range st.Nodes {
		rec.FailuresAtStart[n.Node] = n.Counters["secondary_write_failures"]
	}
	rep := &BackfillReport{PerNode: map[string]Stats{}}
	t0 := time.Now()

	wctx, stopWatch := context.WithCancel(ctx)
	var pw *progressWriter
	if !o.DryRun {
		pw = newProgressWriter(m.j, m.log, dir, total, false)
		pw.save(BackfillRunning, "")
		go pw.run()
	}
	defer pw.stop()
	var watch *loadWatch
	if !o.NoThrottle {
		watch = m.watchLoad(wctx, m.nodes)
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	perNodeRate := 0.0
	if o.RatePerSec > 0 {
		perNodeRate = o.RatePerSec / float64(len(m.nodes))
	}
	for _, node := range m.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, resumed, reason, err := m.backfillNode(ctx, node, dir, st.Epoch, o, perNodeRate, watch, pw, &rec.ResumedAt, rec.FailuresAtStart, &mu)
			mu.Lock()
			defer mu.Unlock()
			rep.PerNode[node] = s
			rec.Stats.add(s)
			rec.Resumed = rec.Resumed || resumed
			if reason != "" {
				rep.LastThrottle = reason
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
			_, _ = m.c.Agent(context.WithoutCancel(ctx), n, "migctl_migrate:stop_watch")
		}
	}
	rec.Seconds = time.Since(t0).Seconds()
	if rec.Seconds > 0 {
		rep.RowsPerSec = float64(rec.Stats.Scanned) / rec.Seconds
	}
	err := errors.Join(errs...)
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
	if pw != nil {
		pw.stop() // no periodic save may land after the final one
		switch {
		case rec.Complete:
			pw.save(BackfillDone, "")
		case errors.Is(err, errInterrupted) || ctx.Err() != nil:
			pw.save(BackfillInterrupted, "interrupted; rerun to resume from the checkpoint")
		default:
			pw.save(BackfillFailed, rec.Error)
		}
	}
	if rec.Complete || !o.DryRun {
		if errors.Is(err, errInterrupted) || ctx.Err() != nil {
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

// backfillNode runs the batches of one node from its checkpoint on.
func (m *Migrator) backfillNode(ctx context.Context, node, dir string, epoch int64, o BackfillOptions, rate float64, watch *loadWatch, pw *progressWriter, resumedAt *int64, failuresAtStart map[string]int64, mu *sync.Mutex) (Stats, bool, string, error) {
	var cp checkpoint
	// resumedFrom takes the secondary write failures a resumed pass was
	// started with (see checkpoint.FailuresAtStart).
	resumedFrom := func(cp checkpoint) {
		if cp.FailuresAtStart != nil {
			failuresAtStart[node] = *cp.FailuresAtStart
		}
	}
	resumed := false
	if !o.Restart && !o.DryRun {
		if ok, err := m.j.GetState(stateBucket, ckptKey(dir, node), &cp); err != nil {
			return Stats{}, false, "", err
		} else if ok && cp.Done && cp.Epoch == epoch {
			// This node finished in the interrupted run and the phase has
			// not changed since: its copy still holds.
			mu.Lock()
			*resumedAt += cp.Stats.Scanned
			resumedFrom(cp)
			mu.Unlock()
			pw.node(node, cp.Stats)
			return cp.Stats, true, "", nil
		} else if ok && cp.Epoch != epoch {
			// The phase changed since this pass began (phase1 -> phase0 ->
			// phase1, say): writes made meanwhile went to one store only,
			// and those behind the cursor would never be read again. The
			// pass starts over; batches are idempotent.
			m.log.Warn("backfill checkpoint from another phase epoch, starting the pass over", "node", node,
				"checkpoint_epoch", cp.Epoch, "epoch", epoch, "scanned", cp.Stats.Scanned)
			cp = checkpoint{}
		} else if ok && !cp.Done {
			resumed = true
			mu.Lock()
			*resumedAt += cp.Stats.Scanned
			resumedFrom(cp)
			mu.Unlock()
			m.log.Info("resuming backfill from checkpoint", "node", node, "pass", cp.Pass, "scanned", cp.Stats.Scanned)
		} else {
			cp = checkpoint{}
		}
	}
	if cp.Pass == "" {
		cp = checkpoint{Pass: "copy", Epoch: epoch}
		mu.Lock()
		if f, ok := failuresAtStart[node]; ok {
			cp.FailuresAtStart = &f
		}
		mu.Unlock()
	}
	op := dir
	if cp.Pass == "prune" {
		op = "prune"
	}
	// Checkpoints are written by a goroutine while the next call runs (a
	// bbolt commit with fsync costs milliseconds the node would otherwise
	// sit idle); a crash then resumes at most one call earlier, and calls
	// are idempotent. A forced save waits for the one in flight first.
	var lastSave time.Time
	var inflight sync.WaitGroup
	var busy atomic.Bool
	var saveMu sync.Mutex
	var saveErr error
	defer inflight.Wait()
	save := func(force bool) error {
		if o.DryRun {
			return nil
		}
		if force {
			inflight.Wait()
			saveMu.Lock()
			err := saveErr
			saveMu.Unlock()
			if err != nil {
				return err
			}
			return m.j.PutState(stateBucket, ckptKey(dir, node), cp)
		}
		if time.Since(lastSave) < time.Second || busy.Load() {
			return nil
		}
		lastSave = time.Now()
		c := cp
		c.Cursor = append([]byte(nil), cp.Cursor...)
		busy.Store(true)
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer busy.Store(false)
			if err := m.j.PutState(stateBucket, ckptKey(dir, node), c); err != nil {
				saveMu.Lock()
				saveErr = err
				saveMu.Unlock()
			}
		}()
		return nil
	}
	start := time.Now()
	var paced int64
	lastReason := ""
	for {
		if err := ctx.Err(); err != nil {
			_ = save(true)
			return cp.Stats, resumed, lastReason, err
		}
		// Throttle: wait while the node is loaded.
		if watch != nil {
			for {
				th, why := Throttle(watch.get(node), o.Limits, time.Now())
				if !th {
					break
				}
				if why != lastReason {
					m.log.Info("backfill throttled", "reason", why)
					lastReason = why
				}
				t := time.Now()
				select {
				case <-ctx.Done():
					_ = save(true)
					return cp.Stats, resumed, lastReason, ctx.Err()
				case <-time.After(250 * time.Millisecond):
				}
				cp.Stats.Throttled += time.Since(t).Seconds()
			}
		}
		// Rate limit: stay on the line rate*elapsed.
		if rate > 0 {
			due := start.Add(time.Duration(float64(paced) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					_ = save(true)
					return cp.Stats, resumed, lastReason, ctx.Err()
				case <-time.After(d):
				}
			}
		}
		// Several batches per call (each its own turn of the store
		// server), bounded by the budget and, with a rate limit, by what
		// the rate allows in one budget.
		maxRows := 1 << 30
		if rate > 0 {
			maxRows = max(o.BatchSize, int(rate*o.CallBudget.Seconds()))
		}
		callStart := time.Now()
		sctx, cancel := context.WithTimeout(ctx, o.StepTimeout+o.CallBudget)
		// The way back (reverse, prune) names the migration's nodes: each
		// session goes back to the one node that serves it (see the
		// hybrid backend's ownership rule), not into every node's file.
		owners := etf.List{}
		if op != "forward" {
			for _, n := range m.nodes {
				owners = append(owners, etf.Atom(n))
			}
		}
		t, err := m.c.Agent(sctx, node, "migctl_migrate:backfill_steps", etf.Atom(op), cp.Cursor, o.BatchSize, o.DryRun,
			int(o.StepTimeout/time.Millisecond), maxRows, int(o.CallBudget/time.Millisecond), owners,
			max(1, int(o.TurnBudget/time.Millisecond)))
		cancel()
		if err != nil {
			var re *erl.RPCError
			if errors.As(err, &re) && re.Reason == "cursor_expired" {
				// The DETS file was reopened since the checkpoint: start the
				// pass again (batches are idempotent).
				m.log.Warn("backfill cursor expired, restarting the pass", "node", node, "pass", cp.Pass)
				cp.Cursor = nil
				cp.Stats.Restarts++
				continue
			}
			_ = save(true)
			return cp.Stats, resumed, lastReason, err
		}
		// {ok, Scanned, Written, Skipped, Expired, Deleted, Next, Done}
		b := Stats{Scanned: erl.Int64(t[1]), Written: erl.Int64(t[2]), Skipped: erl.Int64(t[3]),
			Expired: erl.Int64(t[4]), Deleted: erl.Int64(t[5]), Batches: 1, CallSeconds: time.Since(callStart).Seconds()}
		cp.Stats.add(b)
		pw.node(node, cp.Stats)
		paced += b.Scanned
		if o.Progress != nil && op != "prune" {
			o.Progress.Add(b.Scanned)
		}
		next, _ := t[6].([]byte)
		done, _ := t[7].(bool)
		cp.Cursor = next
		if done {
			if dir == "reverse" && cp.Pass == "copy" {
				cp.Pass, cp.Cursor, op = "prune", nil, "prune"
				if err := save(true); err != nil {
					return cp.Stats, resumed, lastReason, err
				}
				continue
			}
			cp.Done = true
			return cp.Stats, resumed, lastReason, save(true)
		}
		if err := save(false); err != nil {
			return cp.Stats, resumed, lastReason, err
		}
		if err := m.step("backfill:batch:" + node); err != nil {
			_ = save(true)
			return cp.Stats, resumed, lastReason, errors.Join(errInterrupted, err)
		}
	}
}

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
