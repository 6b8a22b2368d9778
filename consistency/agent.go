package consistency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// ErrNoClient is returned when Options.Client is missing: the node-side
// check functions are called through it.
var ErrNoClient = errors.New("consistency: Options.Client is required")

// side is one store as the check sees it: its store (whose spec the
// typed stubs send), its node, and counters of what crossed the wire. A side
// made from a backends.Union has parts, one per member node: every agent
// call goes to each part and the replies are merged (see pass).
type side struct {
	c     *erl.Client
	store backends.Store
	node  string
	parts []*side
	wire  *atomic.Int64 // bytes both ways, shared by both sides of a check
	trips *atomic.Int64
	pace  func(context.Context) error
	// calls, when set (Check), counts the bytes of each kind of call.
	calls *callBytes
	// kept counts the passes this part answered from the check's first
	// pass (ExcludeChanged.Pass: the agent's method "kept").
	kept atomic.Int64
}

// keptPasses is the number of sums and keys calls the side's parts
// answered from a kept first pass instead of reading their store.
func (s *side) keptPasses() int64 {
	n := s.kept.Load()
	for _, p := range s.parts {
		n += p.kept.Load()
	}
	return n
}

// dropPass asks every node of the side to forget what it kept for the
// check token (best effort: a node that kept nothing answers ok, and what
// is not dropped goes by itself after ten idle minutes). It runs after
// the check's context may have ended, so it has its own short deadline.
func (s *side) dropPass(ctx context.Context, token int64, log *slog.Logger) {
	parts := s.parts
	if len(parts) == 0 {
		parts = []*side{s}
	}
	for _, p := range parts {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := (agentapi.Buckets{C: p.c}).DropPass(dctx, p.node, token); err != nil {
			log.Debug("dropping the kept pass", "node", p.node, "err", err)
		}
		cancel()
	}
}

// callBytes are a check's bytes on the wire by node-side function
// (Report.BytesByCall): which of the passes, listings, reads by key or
// session reads moved them.
type callBytes struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *callBytes) add(fun string, n int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[fun] += n
}

func (c *callBytes) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// countCalls makes s and its parts count their bytes by call in c.
func (s *side) countCalls(c *callBytes) {
	s.calls = c
	for _, p := range s.parts {
		p.countCalls(c)
	}
}

func newSide(c *erl.Client, s backends.Store, wire, trips *atomic.Int64, pace func(context.Context) error) *side {
	if u, ok := s.(*backends.Union); ok {
		sd := &side{c: c, store: s, node: s.Node(), wire: wire, trips: trips, pace: pace}
		for _, m := range u.Members {
			sd.parts = append(sd.parts, newSide(c, m, wire, trips, pace))
		}
		return sd
	}
	return &side{c: c, store: s, node: s.Node(), wire: wire, trips: trips, pace: pace}
}

func (s *side) name() string { return s.store.Spec().String() + "@" + s.node }

// oddRows are the rows of a store that are not erlmcp sessions (an id
// that is not a binary, a value that is not a map, a record of another
// shape): the node cannot digest or compare them, so a check counts them
// instead of passing over them. Keys holds the first few keys as Erlang
// prints them.
type oddRows struct {
	N    int64
	Keys []string
}

// pass runs one call of a typed stub on every part of the side (one,
// unless the side is a union), each paced and counted like any call of
// the side (paced); f gets the part and its store and returns the payload
// bytes it moved.
func (s *side) pass(ctx context.Context, fun string, f func(p *side, st agentapi.Store) (int64, error)) error {
	parts := s.parts
	if len(parts) == 0 {
		parts = []*side{s}
	}
	for _, p := range parts {
		if err := p.paced(ctx, fun, func(st agentapi.Store) (int64, error) { return f(p, st) }); err != nil {
			return err
		}
	}
	return nil
}

// sums is migctl_buckets:sums/3: one pass, every bucket of every range
// (on a union side, the members' sums added bucket by bucket: a session
// lives on one member). It also returns the rows of the whole table that
// are not sessions. With ex, the keys in flight are left out
// (agentapi.ExcludeChanged), and excluded counts the rows left out.
func (s *side) sums(ctx context.Context, rs []bucketdiff.Range, quantum int64, ex *agentapi.ExcludeChanged) (out []bucketdiff.Sum, odd oddRows, excluded int64, err error) {
	err = s.pass(ctx, "sums", func(p *side, st agentapi.Store) (int64, error) {
		r, err := agentapi.Buckets{C: p.c}.Sums(ctx, p.node, st, rs,
			agentapi.SumOptions{LAQuantum: quantum, Exclude: ex, ReportMethod: ex != nil && ex.Pass > 0})
		if err != nil {
			return r.Bytes, err
		}
		if r.Method == "kept" {
			p.kept.Add(1)
		}
		excluded += r.Excluded
		if out == nil {
			out = r.Sums
		} else {
			for i := range out {
				out[i].Add(r.Sums[i])
			}
		}
		odd.add(r.Odd)
		return r.Bytes, nil
	})
	return out, odd, excluded, err
}

func (o *oddRows) add(x agentapi.Odd) {
	o.N += x.N
	o.Keys = append(o.Keys, x.Keys...)
}

// digestRow is one row as migctl_check:digests/3 lists it.
type digestRow struct {
	Digest       uint32
	LastAccessed int64
}

// digests lists the rows in rs (migctl_buckets:keys/3), and the rows of
// the table that are not sessions and fall in rs; with ex, without the
// keys in flight (see sums).
func (s *side) digests(ctx context.Context, rs []bucketdiff.Range, limit int, ex *agentapi.ExcludeChanged) (map[string]digestRow, oddRows, error) {
	out := map[string]digestRow{}
	var odd oddRows
	err := s.pass(ctx, "keys", func(p *side, st agentapi.Store) (int64, error) {
		r, err := agentapi.Buckets{C: p.c}.Keys(ctx, p.node, st, rs,
			agentapi.KeyOptions{Limit: limit, Exclude: ex, ReportMethod: ex != nil && ex.Pass > 0})
		if r.Method == "kept" {
			p.kept.Add(1)
		}
		for id, k := range r.Keys {
			out[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
		}
		odd.add(r.Odd)
		return r.Bytes, err
	})
	return out, odd, err
}

// idBytes is the size of ids framed (what crossed the wire).
func idBytes(ids []string) int64 {
	n := int64(4 * len(ids))
	for _, id := range ids {
		n += int64(len(id))
	}
	return n
}

// getMany reads sessions by id without touching them
// (migctl_check:get_many/2), in batches of 500.
func (s *side) getMany(ctx context.Context, ids []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(ids))
	err := s.pass(ctx, "get_many", func(p *side, st agentapi.Store) (int64, error) {
		var n int64
		for i := 0; i < len(ids); i += 500 {
			part := ids[i:min(i+500, len(ids))]
			m, err := agentapi.Check{C: p.c}.GetMany(ctx, p.node, st, part)
			if err != nil {
				return n, err
			}
			n += idBytes(part)
			for id, blob := range m {
				out[id] = blob
				n += int64(8 + len(id) + len(blob))
			}
		}
		return n, nil
	})
	return out, err
}

// slotSample draws every row of a random set of the store's hash slots,
// each slot with probability r, on the store's node in one call
// (migctl_check:sample_draw/4), with their digests, and the drawn rows
// that are not sessions. method is how the node read the store (ets, raw
// or server; a union: the last member's).
func (s *side) slotSample(ctx context.Context, r agentapi.Rate, seed int64) (rows map[string]digestRow, odd oddRows, method string, err error) {
	var out sampleRows
	err = s.pass(ctx, "sample_draw", func(p *side, st agentapi.Store) (int64, error) {
		l, err := agentapi.Sample{C: p.c}.Draw(ctx, p.node, st, r, seed)
		out.add(l)
		method = l.Method
		return l.Bytes, err
	})
	if out.rows == nil {
		out.rows = map[string]digestRow{}
	}
	return out.rows, out.odd, method, err
}

// clockOffset is how far the side's node's clock (erlang:system_time, the
// clock its store's sessions were stamped with and its cleaner expires
// them by) is from migctl's, measured against the middle of the call. A
// session's expiry is judged by the node's time, not migctl's: migctl's
// host need not agree, and an Erlang node does not follow a step of its
// host's clock made after it booted (no_time_warp). A side made of parts
// is measured on its first.
func (s *side) clockOffset(ctx context.Context) (time.Duration, error) {
	n := s
	if len(s.parts) > 0 {
		n = s.parts[0]
	}
	if n.pace != nil {
		if err := n.pace(ctx); err != nil {
			return 0, err
		}
	}
	before := time.Now()
	r, err := n.c.Call(ctx, n.node, "erlang", "system_time", erl.Atom("millisecond"))
	after := time.Now()
	if err != nil {
		return 0, err
	}
	ms := erl.Int64(r)
	if ms <= 0 {
		return 0, fmt.Errorf("consistency: the clock of %s: unexpected reply %v", n.node, r)
	}
	mid := before.Add(after.Sub(before) / 2)
	return time.UnixMilli(ms).Sub(mid), nil
}
