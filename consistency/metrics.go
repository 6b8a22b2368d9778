package consistency

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the monitor's Prometheus series, on a registry of its own
// (node_exporter's habit: nothing global, nothing from other packages).
type metrics struct {
	reg           *prometheus.Registry
	checks        *prometheus.CounterVec
	compared      prometheus.Counter
	mismatches    *prometheus.CounterVec
	lastMismatch  *prometheus.GaugeVec
	lastTime      prometheus.Gauge
	lastDuration  prometheus.Gauge
	bytes         prometheus.Counter
	alerts        prometheus.Counter
	pruned        prometheus.Counter
	throttled     *prometheus.CounterVec
	backoff       prometheus.Gauge
	started       prometheus.Gauge
	ends          prometheus.Gauge
	phase         *prometheus.GaugeVec
	hybrid        *prometheus.GaugeVec
	processedLast prometheus.Gauge
}

func newMetrics(source, target string) *metrics {
	const ns, sub = "migctl", "consistency"
	labels := prometheus.Labels{"source": source, "target": target}
	m := &metrics{reg: prometheus.NewRegistry()}
	m.checks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_total",
		Help: "Consistency checks run, by result (clean, differences, error).", ConstLabels: labels}, []string{"result"})
	m.compared = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sessions_compared_total",
		Help: "Sessions compared by all checks.", ConstLabels: labels})
	m.mismatches = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "mismatches_total",
		Help: "Differences found (after recheck), by kind, summed over checks.", ConstLabels: labels}, []string{"kind"})
	m.lastMismatch = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_check_mismatches",
		Help: "Differences found by the last check, by kind.", ConstLabels: labels}, []string{"kind"})
	m.lastTime = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_check_timestamp_seconds",
		Help: "When the last check finished (Unix time).", ConstLabels: labels})
	m.lastDuration = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_check_duration_seconds",
		Help: "How long the last check took.", ConstLabels: labels})
	m.processedLast = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_check_sessions_compared",
		Help: "Sessions compared by the last check.", ConstLabels: labels})
	m.bytes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "network_bytes_total",
		Help: "Payload bytes the checks moved over the network.", ConstLabels: labels})
	m.alerts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_sent_total",
		Help: "Alerts sent for new mismatches.", ConstLabels: labels})
	m.pruned = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "journal_records_pruned_total",
		Help: "Check records deleted from the journal for being older than the monitor's retention.", ConstLabels: labels})
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_postponed_total",
		Help: "Checks postponed because the nodes were busy or the last check failed, by reason.", ConstLabels: labels}, []string{"reason"})
	m.backoff = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "backoff_seconds",
		Help: "Extra wait added to the interval by back-off (0 when the nodes are calm).", ConstLabels: labels})
	m.started = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "monitor_start_timestamp_seconds",
		Help: "When this monitor first started (kept across restarts, Unix time).", ConstLabels: labels})
	m.ends = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "monitor_end_timestamp_seconds",
		Help: "When the monitor's --duration runs out (Unix time; 0: never).", ConstLabels: labels})
	m.phase = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "node_migration_phase",
		Help: "Migration phase each node reports (1 for the current phase)."}, []string{"node", "phase"})
	// The hybrid backend's own counters, as the node reports them: they
	// only grow (until the node restarts), so use rate() on them.
	m.hybrid = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "hybrid_events",
		Help: "Events the hybrid session backend counted on each node (read_errors, fallbacks, secondary_write_failures, ...); monotonic until the node restarts, use rate()."}, []string{"node", "event"})
	m.reg.MustRegister(m.checks, m.compared, m.mismatches, m.lastMismatch, m.lastTime, m.lastDuration,
		m.processedLast, m.bytes, m.alerts, m.pruned, m.throttled, m.backoff, m.started, m.ends, m.phase, m.hybrid,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every labelled series exists from the start, at zero: an alert rule
	// on rate() or > 0 then sees a series before the first mismatch.
	for _, r := range []string{"clean", "differences", "error"} {
		m.checks.WithLabelValues(r)
	}
	for _, k := range Kinds {
		m.mismatches.WithLabelValues(string(k))
		m.lastMismatch.WithLabelValues(string(k))
	}
	for _, r := range []string{"busy", "error"} {
		m.throttled.WithLabelValues(r)
	}
	return m
}

func (m *metrics) observe(rep *Report) {
	result := "clean"
	if !rep.Clean() {
		result = "differences"
	}
	m.checks.WithLabelValues(result).Inc()
	m.compared.Add(float64(rep.Processed))
	m.processedLast.Set(float64(rep.Processed))
	for _, k := range Kinds {
		m.mismatches.WithLabelValues(string(k)).Add(float64(rep.Count(k)))
		m.lastMismatch.WithLabelValues(string(k)).Set(float64(rep.Count(k)))
	}
	m.lastTime.Set(float64(rep.StartedAt.Add(rep.Duration).UnixMilli()) / 1000)
	m.lastDuration.Set(rep.Duration.Seconds())
	m.bytes.Add(float64(rep.BytesMoved))
}
