package migrate

import (
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/erlmcp/migctl/journal"
)

// Backfill states in a BackfillProgress.
const (
	BackfillRunning     = "running"
	BackfillDone        = "done"
	BackfillInterrupted = "interrupted"
	BackfillFailed      = "failed"
	// BackfillStalled is never written: it is what a "running" record
	// becomes when it has not been updated for StallAfter (the process
	// was killed without a chance to say so).
	BackfillStalled = "stalled"
)

// StallAfter is how old a running backfill's record may get before readers
// call it stalled. The backfill rewrites it every ProgressEvery.
const (
	ProgressEvery = time.Second
	StallAfter    = 30 * time.Second
)

// BackfillProgress is where a backfill stands, kept in the journal while
// it runs and after it ends, so that other processes can show it: the
// consistency monitor exports it as metrics (the dashboard's backfill
// panels), `migctl backfill status` prints it.
type BackfillProgress struct {
	Direction string           `json:"direction"`
	State     string           `json:"state"`
	Total     int64            `json:"total"`
	Started   time.Time        `json:"started"`
	Updated   time.Time        `json:"updated"`
	Nodes     map[string]Stats `json:"nodes"`
	Error     string           `json:"error,omitempty"`
	DryRun    bool             `json:"dry_run,omitempty"`
}

// Scanned sums the rows scanned on every node.
func (p BackfillProgress) Scanned() int64 {
	var n int64
	for _, s := range p.Nodes {
		n += s.Scanned
	}
	return n
}

// Effective is State, with a running record that stopped being updated
// reported as stalled.
func (p BackfillProgress) Effective(now time.Time) string {
	if p.State == BackfillRunning && now.Sub(p.Updated) > StallAfter {
		return BackfillStalled
	}
	return p.State
}

func progressKey(dir string) string { return "progress:" + dir }

// progressWriter keeps a backfill's BackfillProgress current in the journal.
type progressWriter struct {
	j   *journal.Journal
	log *slog.Logger
	mu  sync.Mutex
	p   BackfillProgress
	// quit ends run; done closes when it has returned.
	quit, done chan struct{}
	once       sync.Once
}

func newProgressWriter(j *journal.Journal, log *slog.Logger, dir string, total int64, dryRun bool) *progressWriter {
	now := time.Now().UTC()
	return &progressWriter{j: j, log: log, p: BackfillProgress{Direction: dir, State: BackfillRunning, Total: total,
		Started: now, Updated: now, Nodes: map[string]Stats{}, DryRun: dryRun},
		quit: make(chan struct{}), done: make(chan struct{})}
}

// node records a node's cumulative stats (from its checkpoint on).
func (w *progressWriter) node(n string, s Stats) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.p.Nodes[n] = s
	w.mu.Unlock()
}

func (w *progressWriter) save(state, errText string) {
	w.mu.Lock()
	w.p.State, w.p.Error, w.p.Updated = state, errText, time.Now().UTC()
	p := w.p
	p.Nodes = maps.Clone(w.p.Nodes)
	w.mu.Unlock()
	// Progress is for display: a failure to record it must not stop the
	// copy (the checkpoints are what resuming relies on).
	if err := w.j.PutState(stateBucket, progressKey(p.Direction), p); err != nil {
		w.log.Warn("backfill progress not recorded", "err", err)
	}
}

// run saves the progress every ProgressEvery until stop.
func (w *progressWriter) run() {
	defer close(w.done)
	t := time.NewTicker(ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
			w.save(BackfillRunning, "")
		}
	}
}

// stop ends run and waits for it (safe to call more than once, and on nil).
func (w *progressWriter) stop() {
	if w == nil {
		return
	}
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

// ReadBackfillProgress returns the last recorded progress of the forward
// and the reverse backfill (those that ever ran).
func ReadBackfillProgress(j *journal.Journal) ([]BackfillProgress, error) {
	var out []BackfillProgress
	for _, dir := range []string{"forward", "reverse"} {
		var p BackfillProgress
		ok, err := j.GetState(stateBucket, progressKey(dir), &p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// BackfillCollector exports the journal's backfill progress as Prometheus
// metrics, read at every scrape (the backfill runs in another process, the
// CLI; the journal is what both share). Register it with the consistency
// monitor's registry.
type BackfillCollector struct {
	j                                           *journal.Journal
	log                                         *slog.Logger
	total, scanned, written, state, started, up *prometheus.Desc
	ratio                                       *prometheus.Desc
}

// NewBackfillCollector reads progress from j; a nil log discards (a
// library never writes to the process's default logger: the program
// decides where its logs go, cmd/migctl passes its own).
func NewBackfillCollector(j *journal.Journal, log *slog.Logger) *BackfillCollector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("migctl_backfill_"+name, help, append([]string{"direction"}, labels...), nil)
	}
	return &BackfillCollector{j: j, log: log,
		total:   d("sessions", "Sessions the backfill has to copy (the old store's size when it started)."),
		scanned: d("scanned_sessions_total", "Sessions the backfill has read, per node (counts from 0 at every new run; a resumed run continues its count).", "node"),
		written: d("written_sessions_total", "Sessions the backfill wrote into the new store, per node (not written: already there, newer or equal).", "node"),
		ratio:   d("progress_ratio", "Sessions scanned / sessions to copy, 0 to 1."),
		state:   d("state", "1 for the backfill's state: running, done, interrupted, failed, or stalled (running but not updated for 30 s: the process died).", "state"),
		started: d("start_timestamp_seconds", "When the last run of this backfill started (Unix time)."),
		up:      d("last_update_timestamp_seconds", "When the backfill last recorded its progress (Unix time)."),
	}
}

// Describe implements prometheus.Collector.
func (c *BackfillCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.scanned, c.written, c.ratio, c.state, c.started, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BackfillCollector) Collect(ch chan<- prometheus.Metric) {
	ps, err := ReadBackfillProgress(c.j)
	if err != nil {
		// A scrape must not fail because the journal is busy for longer
		// than its lock timeout; the series are absent for this scrape.
		c.log.Warn("backfill progress unreadable", "err", err)
		return
	}
	now := time.Now()
	for _, p := range ps {
		if p.DryRun {
			continue
		}
		dir := p.Direction
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(p.Total), dir)
		for n, s := range p.Nodes {
			ch <- prometheus.MustNewConstMetric(c.scanned, prometheus.CounterValue, float64(s.Scanned), dir, n)
			ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(s.Written), dir, n)
		}
		r := 0.0
		if p.State == BackfillDone {
			r = 1
		} else if p.Total > 0 {
			r = min(1, float64(p.Scanned())/float64(p.Total))
		}
		ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue, r, dir)
		eff := p.Effective(now)
		for _, s := range []string{BackfillRunning, BackfillDone, BackfillInterrupted, BackfillFailed, BackfillStalled} {
			v := 0.0
			if s == eff {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, dir, s)
		}
		ch <- prometheus.MustNewConstMetric(c.started, prometheus.GaugeValue, float64(p.Started.UnixMilli())/1000, dir)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, float64(p.Updated.UnixMilli())/1000, dir)
	}
}

// Journal is the journal the migrator records in.
func (m *Migrator) Journal() *journal.Journal { return m.j }
