package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/erlmcp/migctl/erl/agentapi"
)

// Options of Run.
type Options struct {
	// Duration: how long to look (default 10 s).
	Duration time.Duration
	// Interval between two looks on a node (default 200 ms, at least 10 ms).
	Interval time.Duration
	// DetsTable: the DETS session table whose server is looked at.
	DetsTable string
	// Top: how many places to report per process (default 3).
	Top int
	// Progress, when set, is called after each batch with the time
	// looked so far.
	Progress func(done, total time.Duration)
	Log      *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	o.Interval = max(o.Interval, 10*time.Millisecond)
	if o.Top <= 0 {
		o.Top = 3
	}
	if o.DetsTable == "" {
		o.DetsTable = "erlmcp_sessions_dets"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Place is where a process was, and in how many looks.
type Place struct {
	Where string  `json:"where"`
	Looks int     `json:"looks"`
	Share float64 `json:"share"` // of the process's looks
}

// Proc is what the looks at one process of one node found.
type Proc struct {
	Node  string `json:"node"`
	Proc  string `json:"proc"`
	Looks int    `json:"looks"`
	// Busy: looks that found it running, runnable, or with messages
	// queued.
	Busy     int     `json:"busy"`
	BusyPart float64 `json:"busy_share"`
	QueueP50 int64   `json:"queue_p50"`
	QueueP95 int64   `json:"queue_p95"`
	QueueMax int64   `json:"queue_max"`
	// Top: where it was most often, busiest first ("idle": waiting with
	// an empty queue).
	Top []Place `json:"top"`
}

// NodeError is a node that could not be looked at.
type NodeError struct {
	Node  string `json:"node"`
	Error string `json:"error"`
}

// Report is the result of Run.
type Report struct {
	Duration time.Duration `json:"duration_ns"`
	Interval time.Duration `json:"interval_ns"`
	Procs    []Proc        `json:"procs"`
	Errors   []NodeError   `json:"errors,omitempty"`
}

// generic are the modules of the server loops every process sits in:
// the place is the first frame outside them.
var generic = []string{"gen_server", "gen", "proc_lib", "sys", "gen_statem"}

// library are modules whose frame alone says little (a file read, a
// list walk, a sleep): the place then names the frame that called into
// them too, "caller > callee".
var library = []string{"prim_file", "file", "lists", "ets", "erlang", "erts_internal", "timer",
	"io", "io_lib", "re", "binary", "maps", "gen_tcp", "prim_inet", "inet"}

// Place of one look: its first frame outside the generic server loops
// (with its caller when that frame is a library's), "idle" when it
// waits with nothing queued.
func place(l agentapi.Look) string {
	if l.Status == "waiting" && l.Queue == 0 {
		return "idle"
	}
	mod := func(f string) string { m, _, _ := strings.Cut(f, ":"); return m }
	for i, f := range l.Frames {
		if slices.Contains(generic, mod(f)) {
			continue
		}
		if slices.Contains(library, mod(f)) {
			for _, c := range l.Frames[i+1:] {
				if m := mod(c); !slices.Contains(library, m) && !slices.Contains(generic, m) {
					return c + " > " + f
				}
			}
		}
		return f
	}
	if len(l.Frames) > 0 {
		return l.Frames[0]
	}
	return l.Status
}

func busy(l agentapi.Look) bool { return l.Status != "waiting" || l.Queue > 0 }

// Run looks at nodes' session processes for o.Duration. A node that fails
// is reported in Errors and the others go on; the error is non-nil when
// no node could be looked at, or when ctx ended first (the report then
// holds the looks taken until then).
func Run(ctx context.Context, api agentapi.Migrate, nodes []string, o Options) (*Report, error) {
	o = o.withDefaults()
	per := max(1, min(25, int(time.Second/o.Interval)))
	looks := make([][]agentapi.Look, len(nodes))
	errs := make([]error, len(nodes))
	start := time.Now()
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < o.Duration && ctx.Err() == nil {
				left := o.Duration - time.Since(start)
				k := max(1, min(per, int(left/o.Interval)))
				ls, err := api.Probe(ctx, n, o.DetsTable, k, o.Interval)
				if err != nil && ctx.Err() != nil {
					return // interrupted: what was looked at so far is reported
				}
				if err != nil {
					errs[i] = err
					o.Log.Warn("probe failed", "node", n, "err", err)
					return
				}
				looks[i] = append(looks[i], ls...)
				if i == 0 && o.Progress != nil {
					o.Progress(min(time.Since(start), o.Duration), o.Duration)
				}
				// A batch's looks are an interval apart in the node; so
				// is its last from the next batch's first.
				select {
				case <-ctx.Done():
				case <-time.After(o.Interval):
				}
			}
		}()
	}
	wg.Wait()
	rep := &Report{Duration: time.Since(start), Interval: o.Interval}
	for i, n := range nodes {
		if errs[i] != nil {
			rep.Errors = append(rep.Errors, NodeError{Node: n, Error: errs[i].Error()})
		}
		rep.Procs = append(rep.Procs, aggregate(n, looks[i], o.Top)...)
	}
	if len(rep.Errors) == len(nodes) {
		return rep, fmt.Errorf("no node could be looked at: %w", errors.Join(errs...))
	}
	return rep, ctx.Err()
}

// procOrder is the order processes are reported in.
var procOrder = []string{"store", "dets", "mnesia_tm", "recorder"}

func aggregate(node string, looks []agentapi.Look, top int) []Proc {
	by := map[string][]agentapi.Look{}
	for _, l := range looks {
		by[l.Proc] = append(by[l.Proc], l)
	}
	var out []Proc
	for name, ls := range by {
		p := Proc{Node: node, Proc: name, Looks: len(ls)}
		q := make([]int64, len(ls))
		at := map[string]int{}
		for i, l := range ls {
			q[i] = l.Queue
			if busy(l) {
				p.Busy++
			}
			at[place(l)]++
		}
		slices.Sort(q)
		p.QueueP50, p.QueueP95, p.QueueMax = q[(len(q)-1)/2], q[(len(q)-1)*95/100], q[len(q)-1]
		p.BusyPart = float64(p.Busy) / float64(p.Looks)
		for w, n := range at {
			p.Top = append(p.Top, Place{Where: w, Looks: n, Share: float64(n) / float64(p.Looks)})
		}
		sort.Slice(p.Top, func(i, j int) bool {
			a, b := p.Top[i], p.Top[j]
			if (a.Where == "idle") != (b.Where == "idle") {
				return b.Where == "idle" // busy places first
			}
			if a.Looks != b.Looks {
				return a.Looks > b.Looks
			}
			return a.Where < b.Where
		})
		p.Top = p.Top[:min(top, len(p.Top))]
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		return slices.Index(procOrder, out[i].Proc) < slices.Index(procOrder, out[j].Proc)
	})
	return out
}
