package migrate

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// LoadSample is one reading of a node's load.
type LoadSample struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// SchedUtil is the scheduler utilisation over 250 ms, 0..1; negative
	// when the node could not measure it.
	SchedUtil float64 `json:"sched_util"`
	RunQueue  int64   `json:"run_queue"`
	// StoreQueue is the message queue of the session store server: the
	// application's own requests waiting behind the backfill.
	StoreQueue int64 `json:"store_queue"`
	// MnesiaQueue is the message queue of mnesia_tm.
	MnesiaQueue int64 `json:"mnesia_queue"`
	// Overloads is the number of mnesia_overload events seen since the
	// previous sample.
	Overloads int64 `json:"overloads"`
}

// Limits are the thresholds Throttle applies; zero fields take defaults.
type Limits struct {
	MaxSchedUtil   float64       // default 0.90
	MaxRunQueue    int64         // default 20 per node
	MaxStoreQueue  int64         // default 50
	MaxMnesiaQueue int64         // default 200
	MaxOverloads   int64         // events per sample tolerated; default 0
	MaxSampleAge   time.Duration // older samples are ignored; default 5 s
}

func (l Limits) withDefaults() Limits {
	if l.MaxSchedUtil <= 0 {
		l.MaxSchedUtil = 0.90
	}
	if l.MaxRunQueue <= 0 {
		l.MaxRunQueue = 20
	}
	if l.MaxStoreQueue <= 0 {
		l.MaxStoreQueue = 50
	}
	if l.MaxMnesiaQueue <= 0 {
		l.MaxMnesiaQueue = 200
	}
	if l.MaxSampleAge <= 0 {
		l.MaxSampleAge = 5 * time.Second
	}
	return l
}

// Throttle decides whether the backfill must pause before its next batch on
// a node, and says why in words an operator understands. It is the one
// place the decision is made, and it is pure: the same sample, limits and
// time always give the same answer.
func Throttle(s LoadSample, l Limits, now time.Time) (bool, string) {
	l = l.withDefaults()
	if s.At.IsZero() || now.Sub(s.At) > l.MaxSampleAge {
		return false, "" // no recent reading: do not stall on missing data
	}
	switch {
	case s.Overloads > l.MaxOverloads:
		return true, fmt.Sprintf("%s: Mnesia reported %d overload event(s)", s.Node, s.Overloads)
	case s.StoreQueue > l.MaxStoreQueue:
		return true, fmt.Sprintf("%s: %d application requests queued at the session store (limit %d)", s.Node, s.StoreQueue, l.MaxStoreQueue)
	case s.MnesiaQueue > l.MaxMnesiaQueue:
		return true, fmt.Sprintf("%s: Mnesia transaction manager queue %d (limit %d)", s.Node, s.MnesiaQueue, l.MaxMnesiaQueue)
	case s.SchedUtil > l.MaxSchedUtil:
		return true, fmt.Sprintf("%s: schedulers %.0f%% busy (limit %.0f%%)", s.Node, s.SchedUtil*100, l.MaxSchedUtil*100)
	case s.RunQueue > l.MaxRunQueue:
		return true, fmt.Sprintf("%s: run queue %d (limit %d)", s.Node, s.RunQueue, l.MaxRunQueue)
	}
	return false, ""
}

// loadWatch collects LoadSamples from nodes in the background.
type loadWatch struct {
	mu     sync.Mutex
	latest map[string]LoadSample
	wg     sync.WaitGroup
}

// watchLoad samples every node about twice a second until ctx ends.
func (m *Migrator) watchLoad(ctx context.Context, nodes []string) *loadWatch {
	w := &loadWatch{latest: map[string]LoadSample{}}
	for _, n := range nodes {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			var prevOver int64 = -1
			for ctx.Err() == nil {
				// The call is not cancelled with ctx: it ends on the node
				// within 250 ms anyway, and a call abandoned here would keep
				// running the agent's code there, which then could not be
				// unloaded at Close.
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				s, over, err := m.sampleLoad(cctx, n)
				cancel()
				if err != nil {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Second):
					}
					continue
				}
				if prevOver >= 0 && over >= prevOver {
					s.Overloads = over - prevOver
				}
				prevOver = over
				w.mu.Lock()
				w.latest[n] = s
				w.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}
	return w
}

func (w *loadWatch) get(node string) LoadSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest[node]
}

// sampleLoad reads one sample (the node measures for 250 ms).
func (m *Migrator) sampleLoad(ctx context.Context, node string) (LoadSample, int64, error) {
	l, err := m.api().Load(ctx, node)
	if err != nil {
		return LoadSample{}, 0, err
	}
	s := LoadSample{Node: node, At: time.Now(), SchedUtil: l.SchedUtil, RunQueue: l.RunQueue,
		StoreQueue: l.StoreQueue, MnesiaQueue: l.MnesiaQueue}
	return s, l.Overloads, nil
}
