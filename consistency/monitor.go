package consistency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Source and Target are the stores to compare (required).
	Source, Target backends.Store
	// Journal keeps the monitor's history and state (required): a
	// restarted monitor with the same Name continues where it stopped.
	Journal *journal.Journal
	// Name identifies the monitor in the journal; default "SOURCE→TARGET".
	Name string
	// Duration bounds the monitor's life, counted from its FIRST start
	// (kept in the journal); 0 runs until cancelled.
	Duration time.Duration
	// Interval between checks; default 5 minutes.
	Interval time.Duration
	// Retention is how long check records stay in the journal; older ones
	// are deleted as the monitor goes (checks of any origin; phase
	// changes, repairs, undos and heals are never deleted). A check
	// record takes about 4 KB of journal: without a bound a monitor at a
	// 10 s interval grows it by ~35 MB a day. Default DefaultRetention;
	// negative keeps every record.
	Retention time.Duration
	// Sample is the sample size of each check (default 10000); Full checks
	// everything instead.
	Sample int
	Full   bool
	// Incremental makes each check a cycle that verifies only the sessions
	// changed since the last cycle (Incremental, from the Mnesia side's
	// change record), with a full check every FullInterval and whenever
	// the record has a gap (first cycle, recorder restarted, window
	// pruned, table cleared, a hybrid write failure counted on a node).
	Incremental bool
	// FullInterval is the schedule of the full pass of an incremental
	// monitor; default 24 hours.
	FullInterval time.Duration
	// IncrementalRecheckDelay is the wait before a difference found by an
	// incremental cycle is read again (Check.RecheckDelay, when set, wins);
	// default 300 ms: what still differs after it and changed during the
	// cycle waits for the next cycle anyway.
	IncrementalRecheckDelay time.Duration
	// IncrementalOptions tune the cycles.
	IncrementalOptions IncrementalOptions
	// AlertOnMismatch alerts once on every new mismatch: a log line, the
	// alerts_sent_total counter, and OnMismatch when set.
	AlertOnMismatch bool
	// OnMismatch receives each alert (with AlertOnMismatch), in the
	// check's goroutine: the next check waits for it. The daemon posts it
	// to Alertmanager (MismatchAlert.Alertmanager, package alerting); the
	// library itself sends nothing over the network but to the nodes.
	OnMismatch func(ctx context.Context, a MismatchAlert)
	// Check tunes each check (Client is required there).
	Check Options
	// CallsPerSecond bounds the calls the monitor makes to the nodes.
	// Default 20.
	CallsPerSecond float64
	// BusyRunQueue: a node whose run queue (processes waiting for a
	// scheduler) exceeds this many per online scheduler is busy, and the
	// check is postponed with back-off. Default 4.
	BusyRunQueue float64
	// Phases, when set, reads the migration state of each node (its phase,
	// and the hybrid backend's counters: read_errors, fallbacks,
	// secondary_write_failures, ...) for the migctl_node_migration_phase
	// and migctl_hybrid_events metrics.
	Phases func(ctx context.Context) (map[string]NodeMigration, error)
	// Log receives the monitor's log lines; nil discards them (the
	// project's rule: a library logs only to the logger it is given).
	Log *slog.Logger
}

// MonitorState is what the journal keeps for a monitor between restarts.
type MonitorState struct {
	Name       string    `json:"name"`
	Source     string    `json:"source"`
	Target     string    `json:"target"`
	FirstStart time.Time `json:"first_start"`
	Starts     int       `json:"starts"`
	Checks     int64     `json:"checks"`
	Mismatches int64     `json:"mismatches"`
	LastCheck  time.Time `json:"last_check,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	// Alerted holds the mismatches already alerted on ("kind id"), so an
	// alert is never sent twice, across restarts too.
	Alerted map[string]time.Time `json:"alerted,omitempty"`
	// Incremental monitors: where the cycles stand, the last full pass,
	// the hybrid write failures seen then, and counts of cycles, full
	// passes and gaps (a full pass run because the record had a gap).
	Cursor        *Cursor   `json:"cursor,omitempty"`
	LastFull      time.Time `json:"last_full,omitempty"`
	WriteFailures int64     `json:"write_failures,omitempty"`
	Cycles        int64     `json:"cycles,omitempty"`
	FullPasses    int64     `json:"full_passes,omitempty"`
	Gaps          int64     `json:"gaps,omitempty"`
	LastGap       string    `json:"last_gap,omitempty"`
}

const monitorBucket = "consistency.monitor"

// maxAlerted bounds the remembered alerts; the oldest are forgotten first.
const maxAlerted = 100000

// Monitor is the consistency monitor's loop: it checks the stores every
// Interval, keeps its metrics on its own registry (Registry), reports new
// mismatches once (OnMismatch) and records its history in the journal.
// It serves nothing: the daemon serves Registry and Health over HTTP
// (package metricsserver) and posts the alerts (package alerting).
// Lifecycle: NewMonitor, Open, Run (until the context is cancelled or the
// duration runs out), Close.
type Monitor struct {
	cfg MonitorConfig
	log *slog.Logger
	m   *metrics

	mu      sync.Mutex
	state   MonitorState
	backoff time.Duration
	lastErr error

	done    chan struct{}
	started atomic.Bool

	pace *pacer

	lastPrune time.Time // under mu
}

// DefaultRetention is how long a monitor keeps check records by default:
// the two weeks of the runbook's phase1 watch, twice over.
const DefaultRetention = 30 * 24 * time.Hour

// pruneBatch bounds the records one prune deletes, so that a first prune
// of a journal grown for months does not hold its lock for long; the
// next prunes take the rest.
const pruneBatch = 2000

// prune deletes the check records older than the retention, at most once
// a minute (or every tenth of a retention shorter than ten minutes): a
// cycle at a short interval does not open the journal a second time for
// it each time.
func (m *Monitor) prune() {
	if m.cfg.Retention < 0 {
		return
	}
	now := time.Now()
	every := min(m.cfg.Retention/10, time.Minute)
	m.mu.Lock()
	due := now.Sub(m.lastPrune) >= every
	if due {
		m.lastPrune = now
	}
	m.mu.Unlock()
	if !due {
		return
	}
	n, err := m.cfg.Journal.Prune(EntryCheck, now.Add(-m.cfg.Retention), pruneBatch)
	switch {
	case err != nil:
		m.log.Error("pruning old check records", "err", err)
	case n > 0:
		m.m.pruned.Add(float64(n))
		m.log.Debug("pruned old check records", "records", n, "retention", m.cfg.Retention)
	}
}

// NewMonitor validates the configuration; nothing is opened yet.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if cfg.Source == nil || cfg.Target == nil || cfg.Journal == nil || cfg.Check.Client == nil {
		return nil, errors.New("monitor: Source, Target, Journal and Check.Client are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 10000
	}
	if cfg.CallsPerSecond <= 0 {
		cfg.CallsPerSecond = 20
	}
	if cfg.BusyRunQueue <= 0 {
		cfg.BusyRunQueue = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FullInterval <= 0 {
		cfg.FullInterval = 24 * time.Hour
	}
	if cfg.IncrementalRecheckDelay <= 0 {
		cfg.IncrementalRecheckDelay = 300 * time.Millisecond
	}
	src := cfg.Source.Spec().String() + "@" + cfg.Source.Node()
	tgt := cfg.Target.Spec().String() + "@" + cfg.Target.Node()
	if cfg.Name == "" {
		cfg.Name = src + "→" + tgt
	}
	mon := &Monitor{cfg: cfg, m: newMetrics(src, tgt), done: make(chan struct{}),
		log:  cfg.Log.With("monitor", cfg.Name),
		pace: newPacer(cfg.CallsPerSecond)}
	mon.state = MonitorState{Name: cfg.Name, Source: src, Target: tgt}
	return mon, nil
}

// Registry is the monitor's own Prometheus registry.
func (m *Monitor) Registry() *prometheus.Registry { return m.m.reg }

// State returns a copy of the monitor's state.
func (m *Monitor) State() MonitorState {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	s.Alerted = nil
	return s
}

// Open loads (or creates) the monitor's state from the journal.
func (m *Monitor) Open(ctx context.Context) error {
	var st MonitorState
	ok, err := m.cfg.Journal.GetState(monitorBucket, m.cfg.Name, &st)
	if err != nil {
		return fmt.Errorf("monitor: load state: %w", err)
	}
	m.mu.Lock()
	if ok {
		m.state = st
	} else {
		m.state.FirstStart = time.Now().UTC()
	}
	m.state.Starts++
	if m.state.Alerted == nil {
		m.state.Alerted = map[string]time.Time{}
	}
	st = m.state
	m.mu.Unlock()
	if err := m.cfg.Journal.PutState(monitorBucket, m.cfg.Name, st); err != nil {
		return fmt.Errorf("monitor: save state: %w", err)
	}
	m.m.started.Set(float64(st.FirstStart.UnixMilli()) / 1000)
	if m.cfg.Duration > 0 {
		m.m.ends.Set(float64(st.FirstStart.Add(m.cfg.Duration).UnixMilli()) / 1000)
	}
	m.log.Info("monitor open", "first_start", st.FirstStart, "starts", st.Starts, "checks_so_far", st.Checks)
	return nil
}

// MonitorHealth is the monitor's /healthz document.
type MonitorHealth struct {
	Name           string    `json:"name"`
	Status         string    `json:"status"` // ok, or failing: the last check failed
	Error          string    `json:"error,omitempty"`
	Checks         int64     `json:"checks"`
	FirstStart     time.Time `json:"first_start"`
	LastCheck      time.Time `json:"last_check"`
	BackoffSeconds float64   `json:"backoff_seconds"`
}

// Health is the monitor's health: failing while its last check failed.
func (m *Monitor) Health() MonitorHealth {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := MonitorHealth{Name: m.state.Name, Status: "ok", Checks: m.state.Checks, FirstStart: m.state.FirstStart,
		LastCheck: m.state.LastCheck, BackoffSeconds: m.backoff.Seconds()}
	if m.lastErr != nil {
		h.Status, h.Error = "failing", m.lastErr.Error()
	}
	return h
}

// Close waits for Run to return, if it was started (cancel Run's context
// to stop it), or for ctx to end. The journal stays open: it is the
// caller's.
func (m *Monitor) Close(ctx context.Context) error {
	if m.started.Load() {
		select {
		case <-m.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Run checks every Interval until ctx is cancelled (nil is returned: a
// stop is not a failure) or the duration, counted from the first start,
// runs out. Failed checks and busy nodes postpone the next check with
// exponential back-off.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("monitor: Run called twice")
	}
	defer close(m.done)
	for {
		wait := m.cfg.Interval
		if end := m.end(); !end.IsZero() {
			left := time.Until(end)
			if left <= 0 {
				m.log.Info("monitor duration reached", "since", m.State().FirstStart, "duration", m.cfg.Duration)
				return nil
			}
			wait = min(wait, left)
		}
		if busy, why := m.busy(ctx); busy {
			m.m.throttled.WithLabelValues("busy").Inc()
			m.grow("nodes busy: " + why)
		} else if _, err := m.CheckNow(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.m.throttled.WithLabelValues("error").Inc()
			m.grow("check failed: " + err.Error())
		} else {
			m.mu.Lock()
			m.backoff = 0
			m.mu.Unlock()
		}
		m.mu.Lock()
		wait += m.backoff
		m.mu.Unlock()
		m.m.backoff.Set(wait.Seconds() - m.cfg.Interval.Seconds())
		select {
		case <-ctx.Done():
			m.log.Info("monitor stopping")
			return nil
		case <-time.After(wait):
		}
	}
}

func (m *Monitor) end() time.Time {
	if m.cfg.Duration <= 0 {
		return time.Time{}
	}
	return m.State().FirstStart.Add(m.cfg.Duration)
}

// grow doubles the back-off (from a quarter interval, up to 4 intervals).
func (m *Monitor) grow(why string) {
	m.mu.Lock()
	m.backoff = min(max(2*m.backoff, m.cfg.Interval/4), 4*m.cfg.Interval)
	b := m.backoff
	m.mu.Unlock()
	m.log.Warn("postponing the next check", "reason", why, "backoff", b)
}

// nodeLoad is what busy() reads from each node.
type nodeLoad struct {
	Node       string
	RunQueue   int64
	Schedulers int64
}

// throttle is the pure decision: busy when any node's run queue exceeds
// limit per online scheduler. The reason is for humans.
func throttle(loads []nodeLoad, limit float64) (bool, string) {
	for _, l := range loads {
		if l.Schedulers > 0 && float64(l.RunQueue) > limit*float64(l.Schedulers) {
			return true, fmt.Sprintf("%s has %d processes waiting for %d schedulers (limit %.0f per scheduler)",
				l.Node, l.RunQueue, l.Schedulers, limit)
		}
	}
	return false, ""
}

func (m *Monitor) nodes() []string {
	seen := map[string]bool{}
	var ns []string
	for _, n := range append(backends.NodesOf(m.cfg.Source), backends.NodesOf(m.cfg.Target)...) {
		if !seen[n] {
			seen[n] = true
			ns = append(ns, n)
		}
	}
	return ns
}

func (m *Monitor) busy(ctx context.Context) (bool, string) {
	node := agentapi.Node{C: m.cfg.Check.Client}
	var loads []nodeLoad
	for _, n := range m.nodes() {
		rq, sc, err := node.Load(ctx, n)
		if err != nil {
			continue // the check itself will report an unreachable node
		}
		loads = append(loads, nodeLoad{Node: n, RunQueue: rq, Schedulers: sc})
	}
	return throttle(loads, m.cfg.BusyRunQueue)
}

// refreshMigration reads each node's phase and hybrid counters (with every
// check, so the dashboard follows the migration).
func (m *Monitor) refreshMigration(ctx context.Context) {
	if m.cfg.Phases == nil {
		return
	}
	ps, err := m.cfg.Phases(ctx)
	if err != nil {
		m.log.Debug("reading phases", "err", err)
		return
	}
	m.m.phase.Reset()
	for n, nm := range ps {
		m.m.phase.WithLabelValues(n, nm.Phase).Set(1)
		for ev, v := range nm.Counters {
			m.m.hybrid.WithLabelValues(n, ev).Set(float64(v))
		}
	}
}

// NodeMigration is one node's migration state as the monitor exports it.
type NodeMigration struct {
	Phase    string
	Counters map[string]int64
}

// CheckNow runs one check now: metrics, journal history, alerts. An
// incremental monitor runs one cycle (or the full pass, when due).
func (m *Monitor) CheckNow(ctx context.Context) (*Report, error) {
	o := m.cfg.Check
	if !m.cfg.Full {
		o.Sample = m.cfg.Sample
	}
	o.Pace = m.pace.wait
	if o.Log == nil {
		o.Log = m.log
	}
	if m.cfg.Incremental {
		return m.cycle(ctx, o)
	}
	rep, err := Check(ctx, m.cfg.Source, m.cfg.Target, o)
	return m.finish(ctx, rep, err)
}

// cycle is one step of an incremental monitor: the incremental verify of
// what changed since the last cycle, or a full check when one is due
// (schedule) or needed (a gap in the change record, a write failure
// counted by a hybrid backend: a write that may have reached one store
// only, which the record of the other cannot show).
func (m *Monitor) cycle(ctx context.Context, o Options) (*Report, error) {
	m.mu.Lock()
	var cur Cursor
	if m.state.Cursor != nil {
		cur = *m.state.Cursor
		cur.Pending = append([]string(nil), cur.Pending...)
	}
	lastFull, seenFailures := m.state.LastFull, m.state.WriteFailures
	m.mu.Unlock()
	failures, haveFailures := m.writeFailures(ctx)
	reason := ""
	switch {
	case cur.Since == 0:
		reason = "no previous cycle"
	case time.Since(lastFull) >= m.cfg.FullInterval:
		reason = fmt.Sprintf("full pass due (every %s)", m.cfg.FullInterval)
	case haveFailures && failures != seenFailures:
		reason = fmt.Sprintf("hybrid write failures went from %d to %d: a write may have reached one store only", seenFailures, failures)
	}
	if reason == "" {
		io := o
		if io.RecheckDelay == 0 {
			io.RecheckDelay = m.cfg.IncrementalRecheckDelay
		}
		if io.Rechecks == 0 {
			io.Rechecks = 1
		}
		res, err := Incremental(ctx, m.cfg.Source, m.cfg.Target, cur, io, m.cfg.IncrementalOptions)
		if err != nil {
			return m.finish(ctx, nil, err)
		}
		if res.Gap == "" {
			m.save(func(s *MonitorState) {
				next := res.Next
				s.Cursor = &next
				s.Cycles++
			})
			m.log.Debug("incremental cycle", "changed", res.Changed, "carried", res.Carried,
				"duration", res.Report.Duration, "bytes", res.Report.BytesMoved)
			return m.finish(ctx, res.Report, nil)
		}
		reason = "coverage gap: " + res.Gap
		m.save(func(s *MonitorState) { s.Gaps++; s.LastGap = res.Gap })
	}
	m.log.Info("running a full pass", "reason", reason)
	mark, err := MarkCursor(ctx, m.cfg.Source, m.cfg.Target, o)
	if err != nil {
		return m.finish(ctx, nil, fmt.Errorf("full pass: %w", err))
	}
	fo := o
	fo.Sample = 0
	rep, err := Check(ctx, m.cfg.Source, m.cfg.Target, fo)
	if err == nil {
		for _, d := range rep.Differences {
			mark.Pending = append(mark.Pending, d.ID)
		}
		m.save(func(s *MonitorState) {
			s.Cursor = &mark
			s.LastFull = time.Now().UTC()
			s.FullPasses++
			if haveFailures {
				s.WriteFailures = failures
			}
		})
	}
	return m.finish(ctx, rep, err)
}

// writeFailures sums the hybrid backends' write failure counters over the
// nodes (false when Phases is not set or cannot be read).
func (m *Monitor) writeFailures(ctx context.Context) (int64, bool) {
	if m.cfg.Phases == nil {
		return 0, false
	}
	ps, err := m.cfg.Phases(ctx)
	if err != nil {
		return 0, false
	}
	var n int64
	for _, nm := range ps {
		n += nm.Counters["secondary_write_failures"] + nm.Counters["primary_write_failures"]
	}
	return n, true
}

// finish records a check's outcome: metrics, journal, state, alerts.
func (m *Monitor) finish(ctx context.Context, rep *Report, err error) (*Report, error) {
	m.refreshMigration(ctx)
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			m.m.checks.WithLabelValues("error").Inc()
			m.log.Error("check failed", "err", err)
			m.save(func(s *MonitorState) { s.LastError = err.Error() })
		}
		return nil, err
	}
	m.m.observe(rep)
	seq, jerr := RecordCheck(m.cfg.Journal, rep, "monitor:"+m.cfg.Name)
	if jerr != nil {
		m.log.Error("recording the check", "err", jerr)
	}
	m.prune()
	var fresh []Difference
	m.save(func(s *MonitorState) {
		s.Checks++
		s.Mismatches += int64(len(rep.Differences))
		s.LastCheck, s.LastError = time.Now().UTC(), ""
		if !m.cfg.AlertOnMismatch {
			return
		}
		for _, d := range rep.Differences {
			k := string(d.Kind) + " " + d.ID
			if _, seen := s.Alerted[k]; !seen {
				fresh = append(fresh, d)
				s.Alerted[k] = time.Now().UTC()
			}
		}
		trimAlerted(s.Alerted)
	})
	if rep.Clean() {
		m.log.Info("check clean", "mode", rep.Mode, "compared", rep.Processed, "duration", rep.Duration, "bytes", rep.BytesMoved)
	} else {
		m.log.Warn("check found differences", "mode", rep.Mode, "compared", rep.Processed,
			"mismatched", rep.Mismatched, "missing_in_target", rep.MissingInTarget, "extra_in_target", rep.ExtraInTarget, "new", len(fresh))
	}
	if len(fresh) > 0 {
		m.alert(ctx, rep, fresh, seq)
	}
	return rep, nil
}

func (m *Monitor) save(f func(*MonitorState)) {
	m.mu.Lock()
	f(&m.state)
	st := m.state
	st.Alerted = make(map[string]time.Time, len(m.state.Alerted))
	for k, v := range m.state.Alerted {
		st.Alerted[k] = v
	}
	m.mu.Unlock()
	if err := m.cfg.Journal.PutState(monitorBucket, m.cfg.Name, st); err != nil {
		m.log.Error("saving monitor state", "err", err)
	}
}

func trimAlerted(a map[string]time.Time) {
	if len(a) <= maxAlerted {
		return
	}
	type kv struct {
		k string
		t time.Time
	}
	all := make([]kv, 0, len(a))
	for k, t := range a {
		all = append(all, kv{k, t})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })
	for _, x := range all[:len(all)-maxAlerted] {
		delete(a, x.k)
	}
}

// alert reports fresh mismatches: a log line, the counter, OnMismatch.
func (m *Monitor) alert(ctx context.Context, rep *Report, fresh []Difference, seq uint64) {
	a := newMismatchAlert(m.cfg.Name, rep, fresh, seq)
	m.log.Warn("ALERT "+a.Summary(), "mismatched", a.Counts[KindMismatched], "missing_in_target", a.Counts[KindMissingInTarget],
		"extra_in_target", a.Counts[KindExtraInTarget], "check", seq, "first", strings.Join(a.First(), "; "))
	m.m.alerts.Inc()
	if m.cfg.OnMismatch != nil {
		m.cfg.OnMismatch(ctx, a)
	}
}

// pacer spaces calls to the nodes at most rate per second.
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

func newPacer(rate float64) *pacer {
	return &pacer{every: time.Duration(float64(time.Second) / rate)}
}

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}
