package cluster

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// eventTag is the first element of every message the forwarders send.
const eventTag = "migctl_cluster_event"

// Event is one Mnesia system event or node up/down seen on a node.
type Event struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"` // where it was seen
	// Kind: inconsistent_database, mnesia_down, mnesia_up, mnesia_overload,
	// nodeup, nodedown, subscribed, unsubscribed, ...
	Kind string `json:"kind"`
	Peer string `json:"peer,omitempty"`
	Text string `json:"text,omitempty"`
}

// WatchReport is one evaluation of the cluster by Watch.
type WatchReport struct {
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger"` // "start", "event", "timer"
	Status  *Status   `json:"status"`
	// Changed is true when the verdict or the islands differ from the
	// previous report.
	Changed bool `json:"changed"`
	// Events seen since the previous report.
	Events []Event `json:"events,omitempty"`
}

// WatchOptions tune Watch.
type WatchOptions struct {
	// Interval between comparisons of the nodes' views when no event
	// arrives (default 1s).
	Interval time.Duration
	// OnReport receives every evaluation (from Watch's goroutine).
	OnReport func(WatchReport)
	// OnEvent receives every event as it arrives (optional).
	OnEvent func(Event)
}

// Watch runs until ctx ends: it starts an event forwarder on every node,
// re-evaluates the cluster at once on every event and on a timer anyway,
// and restarts forwarders on nodes that come back. It stops the
// forwarders when it returns (they also exit by themselves if migctl
// disappears).
func (cl *Cluster) Watch(ctx context.Context, opts WatchOptions) error {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	events, unsub := cl.c.Subscribe(eventTag, 4096)
	defer unsub()
	downs, unsubDown := cl.c.Subscribe("nodedown", 64)
	defer unsubDown()

	w := &watcher{cl: cl, fwd: map[string]erl.Pid{}, overload: map[string]int{}}
	defer w.stopAll()

	var pending []Event
	var last *Status
	evaluate := func(trigger string) {
		st, err := cl.Status(ctx)
		if err != nil {
			return // ctx ended
		}
		// Forwarders go where they are missing, on nodes that answered
		// (a node that is down costs no time here).
		var reachable []string
		for _, v := range st.Nodes {
			if v.Reachable {
				reachable = append(reachable, v.Node)
			}
		}
		w.ensureForwarders(ctx, reachable)
		for i := range st.Nodes {
			st.Nodes[i].OverloadEvents = w.overload[st.Nodes[i].Node]
		}
		r := WatchReport{Time: time.Now().UTC(), Trigger: trigger, Status: st, Events: pending,
			Changed: last == nil || last.Verdict != st.Verdict || fmt.Sprint(last.Islands) != fmt.Sprint(st.Islands)}
		pending = nil
		last = st
		if opts.OnReport != nil {
			opts.OnReport(r)
		}
	}
	evaluate("start")
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-events:
			e, ok := parseEvent(m)
			if !ok {
				continue
			}
			pending = append(pending, w.note(e, opts.OnEvent))
			// Let a burst of events (every node reports the same split)
			// arrive, then look once.
			drain := time.After(20 * time.Millisecond)
		collect:
			for {
				select {
				case m := <-events:
					if e, ok := parseEvent(m); ok {
						pending = append(pending, w.note(e, opts.OnEvent))
					}
				case <-drain:
					break collect
				}
			}
			evaluate("event")
		case m := <-downs:
			if n, ok := agentapi.ParseNodeDown(m); ok {
				w.mu.Lock()
				delete(w.fwd, n)
				w.mu.Unlock()
				pending = append(pending, w.note(Event{Time: time.Now().UTC(), Node: n, Kind: "migctl_lost_node"}, opts.OnEvent))
			}
			evaluate("event")
		case <-tick.C:
			evaluate("timer")
		}
	}
}

type watcher struct {
	cl       *Cluster
	mu       sync.Mutex
	fwd      map[string]erl.Pid
	overload map[string]int
}

func (w *watcher) note(e Event, fn func(Event)) Event {
	if e.Kind == "mnesia_overload" {
		w.overload[e.Node]++
	}
	w.cl.log.Debug("mnesia event", "node", e.Node, "kind", e.Kind, "peer", e.Peer)
	if fn != nil {
		fn(e)
	}
	return e
}

// ensureForwarders starts a forwarder on every known node that lacks one.
func (w *watcher) ensureForwarders(ctx context.Context, nodes []string) {
	forEach(nodes, func(_ int, n string) {
		w.mu.Lock()
		_, ok := w.fwd[n]
		w.mu.Unlock()
		if ok {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		pid, err := w.cl.api().Forwarder(cctx, n, w.cl.c.Self(), eventTag)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.fwd[n] = pid
		w.mu.Unlock()
	})
}

func (w *watcher) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.mu.Lock()
	fwd := w.fwd
	w.fwd = map[string]erl.Pid{}
	w.mu.Unlock()
	// forwarder_stop waits until the forwarder is gone, so that unloading
	// the agent right after finds no process running its code.
	var nodes []string
	for n := range fwd {
		nodes = append(nodes, n)
	}
	forEach(nodes, func(_ int, n string) {
		_ = w.cl.api().ForwarderStop(ctx, n, fwd[n])
	})
}

// parseEvent reads a forwarder's message.
func parseEvent(m erl.Term) (Event, bool) {
	e, ok := agentapi.ParseClusterEvent(m)
	if !ok {
		return Event{}, false
	}
	return Event{Time: time.Now().UTC(), Node: e.Node, Kind: e.Kind, Peer: e.Peer, Text: e.Text}, true
}

// WriteMetrics writes st in the Prometheus text format: the series of a
// StatusCollector holding st.
func WriteMetrics(w io.Writer, st *Status) error {
	c := NewStatusCollector()
	c.Set(st)
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return err
		}
	}
	return nil
}

// StatusCollector exports the latest Status it was given as gauges:
// migctl_mnesia_partitioned (1 when split), migctl_mnesia_degraded,
// migctl_mnesia_islands, migctl_mnesia_island{node,island} (the island
// index of each node, largest island 0), migctl_mnesia_node_reachable,
// migctl_mnesia_running, migctl_mnesia_overload_events, and each node's
// change recorder: migctl_recorder_running, migctl_recorder_covered_seconds
// {node,table}, migctl_recorder_keys, migctl_recorder_memory_bytes,
// migctl_recorder_changes_total{node,op}. Before the first
// Set it exports nothing, so absent() tells "no evaluation yet". `migctl
// cluster watch` serves it alone; `migctl consistency monitor
// --watch-cluster` registers it beside its own metrics.
type StatusCollector struct {
	mu sync.Mutex
	st *Status
}

// NewStatusCollector returns a collector with no status yet.
func NewStatusCollector() *StatusCollector { return &StatusCollector{} }

// Set replaces the status the collector exports.
func (c *StatusCollector) Set(st *Status) {
	c.mu.Lock()
	c.st = st
	c.mu.Unlock()
}

var (
	descPartitioned = prometheus.NewDesc("migctl_mnesia_partitioned", "1 when two reachable nodes sharing a schema do not replicate with each other", nil, nil)
	descDegraded    = prometheus.NewDesc("migctl_mnesia_degraded", "1 when a node is unreachable or has Mnesia stopped", nil, nil)
	descIslands     = prometheus.NewDesc("migctl_mnesia_islands", "number of groups of nodes replicating with each other", nil, nil)
	descIsland      = prometheus.NewDesc("migctl_mnesia_island", "island index of each node (0 is the largest)", []string{"node", "island"}, nil)
	descReachable   = prometheus.NewDesc("migctl_mnesia_node_reachable", "1 when migctl reaches the node", []string{"node"}, nil)
	descRunning     = prometheus.NewDesc("migctl_mnesia_running", "1 when Mnesia runs on the node", []string{"node"}, nil)
	descOverload    = prometheus.NewDesc("migctl_mnesia_overload_events", "mnesia_overload events seen by this watch", []string{"node"}, nil)
	descRecRunning  = prometheus.NewDesc("migctl_recorder_running", "1 when the node's change recorder (migctl_node) runs", []string{"node"}, nil)
	descRecCovered  = prometheus.NewDesc("migctl_recorder_covered_seconds", "how far back the node's change records reach for a table (0: not recording it)", []string{"node", "table"}, nil)
	descRecKeys     = prometheus.NewDesc("migctl_recorder_keys", "keys the node's change recorder holds", []string{"node"}, nil)
	descRecMemory   = prometheus.NewDesc("migctl_recorder_memory_bytes", "memory of the node's change records", []string{"node"}, nil)
	descRecChanges  = prometheus.NewDesc("migctl_recorder_changes_total", "changes recorded on the node since its recorder started", []string{"node", "op"}, nil)
)

// Describe implements prometheus.Collector.
func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPartitioned, descDegraded, descIslands, descIsland, descReachable, descRunning, descOverload,
		descRecRunning, descRecCovered, descRecKeys, descRecMemory, descRecChanges} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st == nil {
		return
	}
	bit := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descPartitioned, bit(st.Verdict == Partitioned))
	gauge(descDegraded, bit(st.Verdict == Degraded))
	gauge(descIslands, float64(len(st.Islands)))
	for i, is := range st.Islands {
		for _, n := range is {
			gauge(descIsland, float64(i), n, strconv.Itoa(i))
		}
	}
	for _, v := range st.Nodes {
		gauge(descReachable, bit(v.Reachable), v.Node)
		gauge(descRunning, bit(v.MnesiaRunning()), v.Node)
		gauge(descOverload, float64(v.OverloadEvents), v.Node)
		if r := v.Recorder; r != nil {
			gauge(descRecRunning, bit(r.Running), v.Node)
			if !r.Running {
				continue
			}
			for tab, since := range r.Since {
				gauge(descRecCovered, coveredSeconds(st.Time, since), v.Node, tab)
			}
			gauge(descRecKeys, float64(r.Keys), v.Node)
			gauge(descRecMemory, float64(r.MemoryBytes), v.Node)
			ch <- prometheus.MustNewConstMetric(descRecChanges, prometheus.CounterValue, float64(r.Writes), v.Node, "write")
			ch <- prometheus.MustNewConstMetric(descRecChanges, prometheus.CounterValue, float64(r.Deletes), v.Node, "delete")
		}
	}
}

// coveredSeconds is migctl_recorder_covered_seconds: how long before now a
// recorder's records of a table reach (since, the node's time in ms; <= 0:
// not recording it, 0). The node's clock need not agree with migctl's: a
// recorder that does record is never reported as 0 (which the alerts read
// as "not recording") however far ahead of migctl the node's clock is; the
// value is then short by that much.
func coveredSeconds(now time.Time, since int64) float64 {
	if since <= 0 {
		return 0
	}
	return max(0.001, float64(now.UnixMilli()-since)/1000)
}
