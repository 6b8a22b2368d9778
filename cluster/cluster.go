package cluster

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// Sentinel errors.
var (
	// ErrNotPartitioned: a heal was asked for a cluster that is not split.
	ErrNotPartitioned = errors.New("cluster is not partitioned")
	// ErrNotHealthy: ResyncNode was asked of a cluster that is split or
	// has another node down.
	ErrNotHealthy = errors.New("cluster is not healthy")
	// ErrUnknownNode: a node named by the operator is not part of the cluster.
	ErrUnknownNode = errors.New("node is not part of the cluster")
	// ErrUnhealed: the heal ran but verification found the cluster still
	// split or its replicas different.
	ErrUnhealed = errors.New("cluster not healed")
	// ErrPlanStale: the cluster changed between the plan and its execution.
	ErrPlanStale = errors.New("plan no longer matches the cluster")
	// ErrFenceLost: a loser's fence was no longer held right before its
	// Mnesia was to stop; the heal stopped before discarding anything.
	ErrFenceLost = errors.New("fence lost")
	// ErrLoserStopped: a loser's Mnesia stopped during the heal, after its
	// changes were read, and not by the heal; the heal stopped before
	// merging or discarding anything.
	ErrLoserStopped = errors.New("a loser's Mnesia stopped during the heal")
)

// Options configure a Cluster.
type Options struct {
	// Nodes are the cluster's nodes as the operator knows them. Nodes that
	// the reachable ones list in db_nodes are added automatically.
	Nodes []string
	// Tables are the session tables to look after; default
	// backends.DefaultMnesiaTable.
	Tables []string
	// Buckets is the number of hash buckets for checksums; 0 picks it from
	// the table's size (about 8 rows a bucket, 1024 to 65536).
	Buckets int
	// ViewTimeout bounds reading one node's view in Status (default 5s):
	// a frozen node or a cut network shows as unreachable instead of
	// holding up the verdict.
	ViewTimeout time.Duration
	// Logger receives progress lines; default discards.
	Logger *slog.Logger
}

// Cluster is a handle on one Mnesia cluster through an erl.Client. It holds
// no connection state of its own; every call reads the nodes afresh.
type Cluster struct {
	c           *erl.Client
	nodes       []string
	tables      []string
	buckets     int
	viewTimeout time.Duration
	log         *slog.Logger
	// beforeReadRows, when set (tests), runs in a heal's read-changes
	// between the comparison and the reading of the loser's rows.
	beforeReadRows func()
	// afterStopLosers, when set (tests), runs in reload-losers once every
	// in-band loser's Mnesia is stopped, before any starts again; an error
	// ends the step there (an interrupted heal).
	afterStopLosers func() error
}

// New returns a Cluster over the given client.
func New(c *erl.Client, opts Options) (*Cluster, error) {
	if len(opts.Nodes) == 0 {
		return nil, errors.New("cluster: no nodes given")
	}
	for _, n := range opts.Nodes {
		if _, _, err := erl.SplitNode(n); err != nil {
			return nil, err
		}
	}
	if len(opts.Tables) == 0 {
		opts.Tables = []string{backends.DefaultMnesiaTable}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ViewTimeout <= 0 {
		opts.ViewTimeout = 5 * time.Second
	}
	return &Cluster{c: c, nodes: dedupe(opts.Nodes), tables: opts.Tables, buckets: opts.Buckets,
		viewTimeout: opts.ViewTimeout, log: opts.Logger.With("component", "cluster")}, nil
}

// Nodes are the nodes this handle knows of.
func (cl *Cluster) Nodes() []string { return append([]string(nil), cl.nodes...) }

// Tables are the session tables this handle looks after.
func (cl *Cluster) Tables() []string { return append([]string(nil), cl.tables...) }

// Client is the underlying Erlang client.
func (cl *Cluster) Client() *erl.Client { return cl.c }

// mnesia is the stub of the plain Mnesia calls.
func (cl *Cluster) mnesia() agentapi.Mnesia { return agentapi.Mnesia{C: cl.c} }

// forEach runs fn for every node concurrently and waits.
func forEach(nodes []string, fn func(i int, n string)) {
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i, n)
		}()
	}
	wg.Wait()
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range in {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
