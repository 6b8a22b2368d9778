package consistency

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// ErrNoClient is returned when Options.Client is missing: the node-side
// check functions are called through it.
var ErrNoClient = errors.New("consistency: Options.Client is required")

// side is one store as the check sees it: its node, the spec term that the
// agent modules dispatch on, and counters of what crossed the wire. A side
// made from a backends.Union has parts, one per member node: every agent
// call goes to each part and the replies are merged (see call).
type side struct {
	c     *erl.Client
	store backends.Store
	node  string
	term  etf.Tuple
	parts []*side
	wire  *atomic.Int64 // bytes both ways, shared by both sides of a check
	trips *atomic.Int64
	pace  func(context.Context) error
}

func newSide(c *erl.Client, s backends.Store, wire, trips *atomic.Int64, pace func(context.Context) error) *side {
	if u, ok := s.(*backends.Union); ok {
		sd := &side{c: c, store: s, node: s.Node(), wire: wire, trips: trips, pace: pace}
		for _, m := range u.Members {
			sd.parts = append(sd.parts, newSide(c, m, wire, trips, pace))
		}
		sd.term = sd.parts[0].term
		return sd
	}
	sp := s.Spec()
	var t etf.Tuple
	// The same spec terms backends.Open builds (the agent contract).
	switch sp.Kind {
	case backends.KindETS:
		t = etf.Tuple{etf.Atom("ets"), etf.Atom(sp.Table)}
	case backends.KindDETS:
		t = etf.Tuple{etf.Atom("dets"), etf.Atom(sp.Table), sp.File, sp.Create, c.Self()}
	default:
		t = etf.Tuple{etf.Atom("mnesia"), etf.Atom(sp.Table)}
	}
	return &side{c: c, store: s, node: s.Node(), term: t, wire: wire, trips: trips, pace: pace}
}

func (s *side) name() string { return s.store.Spec().String() + "@" + s.node }

// call runs migctl_check:fun(Args) where args[0] is the side's spec term.
// On a union side it runs on every part (each with its own spec term) and
// merges the replies, which all have the shape {ok, Binary, Count} or
// {ok, Binary, Count, Odd}: listings (get_many, slot_sample, the DETS-slot
// listings) are concatenated; the rows that are not sessions (Odd) are
// added up. A session lives on one member, so the merges are exact. (The
// bucket protocol goes through the typed stub instead: see pass.)
func (s *side) call(ctx context.Context, fun string, sent int, args ...erl.Term) (etf.Tuple, error) {
	if len(s.parts) == 0 {
		return s.call1(ctx, fun, sent, args...)
	}
	var merged etf.Tuple
	for _, p := range s.parts {
		a := append([]erl.Term{p.term}, args[1:]...)
		t, err := p.call1(ctx, fun, sent, a...)
		if err != nil {
			return nil, err
		}
		if merged == nil {
			merged = etf.Tuple{t[0], append([]byte(nil), erl.Bytes(t[1])...), erl.Int64(t[2])}
			if len(t) > 3 {
				merged = append(merged, append([]byte(nil), erl.Bytes(t[3])...))
			}
			continue
		}
		if len(t) > 3 && len(merged) > 3 {
			o, err := mergeOdd(merged[3].([]byte), erl.Bytes(t[3]))
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", fun, s.name(), err)
			}
			merged[3] = o
		}
		merged[1] = append(merged[1].([]byte), erl.Bytes(t[1])...)
		merged[2] = merged[2].(int64) + erl.Int64(t[2])
	}
	return merged, nil
}

func (s *side) call1(ctx context.Context, fun string, sent int, args ...erl.Term) (etf.Tuple, error) {
	if s.pace != nil {
		if err := s.pace(ctx); err != nil {
			return nil, err
		}
	}
	s.trips.Add(1)
	s.wire.Add(int64(sent))
	t, err := s.c.Agent(ctx, s.node, "migctl_check:"+fun, args...)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", fun, s.name(), err)
	}
	for _, x := range t[1:] {
		if b, ok := x.([]byte); ok {
			s.wire.Add(int64(len(b)))
		}
	}
	return t, nil
}

// oddRows are the rows of a store that are not erlmcp sessions (an id
// that is not a binary, a value that is not a map, a record of another
// shape): the node cannot digest or compare them, so a check counts them
// instead of passing over them. Keys holds the first few keys as Erlang
// prints them.
type oddRows struct {
	N    int64
	Keys []string
}

// parseOdd reads the agent's <<Count:32, (KeyLen:32, Key/binary)*>>; a
// reply without it (a reply shape with no Odd) is no odd rows.
func parseOdd(t etf.Tuple) (oddRows, error) {
	if len(t) < 4 {
		return oddRows{}, nil
	}
	o, err := agentapi.ParseOdd(erl.Bytes(t[3]))
	return oddRows(o), err
}

// mergeOdd adds two Odd binaries (union members): counts add up, keys are
// concatenated.
func mergeOdd(a, b []byte) ([]byte, error) {
	if len(a) < 4 || len(b) < 4 {
		return nil, errors.New("odd rows: truncated reply")
	}
	out := binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(a)+binary.BigEndian.Uint32(b))
	out = append(out, a[4:]...)
	return append(out, b[4:]...), nil
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
// are not sessions.
func (s *side) sums(ctx context.Context, rs []bucketdiff.Range, quantum int64) ([]bucketdiff.Sum, oddRows, error) {
	var out []bucketdiff.Sum
	var odd oddRows
	err := s.pass(ctx, "sums", func(p *side, st agentapi.Store) (int64, error) {
		r, err := agentapi.Buckets{C: p.c}.Sums(ctx, p.node, st, rs, agentapi.SumOptions{LAQuantum: quantum})
		if err != nil {
			return r.Bytes, err
		}
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
	return out, odd, err
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
// the table that are not sessions and fall in rs.
func (s *side) digests(ctx context.Context, rs []bucketdiff.Range, limit int) (map[string]digestRow, oddRows, error) {
	out := map[string]digestRow{}
	var odd oddRows
	err := s.pass(ctx, "keys", func(p *side, st agentapi.Store) (int64, error) {
		r, err := agentapi.Buckets{C: p.c}.Keys(ctx, p.node, st, rs, agentapi.KeyOptions{Limit: limit})
		for id, k := range r.Keys {
			out[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
		}
		odd.add(r.Odd)
		return r.Bytes, err
	})
	return out, odd, err
}

// digestsOf lists the given ids' digests (those present), by lookup
// (migctl_buckets:of_ids/3).
func (s *side) digestsOf(ctx context.Context, ids []string) (map[string]digestRow, error) {
	out := map[string]digestRow{}
	err := s.pass(ctx, "of_ids", func(p *side, st agentapi.Store) (int64, error) {
		r, err := agentapi.Buckets{C: p.c}.OfIDs(ctx, p.node, st, ids, 5000, agentapi.KeyOptions{})
		for id, k := range r.Keys {
			out[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
		}
		return r.Bytes, err
	})
	return out, err
}

// membersOf says which of ids the store holds (migctl_check:members_of/2),
// in batches of 5,000.
func (s *side) membersOf(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.pass(ctx, "members_of", func(p *side, st agentapi.Store) (int64, error) {
		var n int64
		for i := 0; i < len(ids); i += 5000 {
			part := ids[i:min(i+5000, len(ids))]
			m, err := agentapi.Check{C: p.c}.MembersOf(ctx, p.node, st, part)
			if err != nil {
				return n, err
			}
			maps.Copy(out, m)
			n += idBytes(part) + idBytes(slices.Collect(maps.Keys(m)))
		}
		return n, nil
	})
	return out, err
}

// idBytes is the size of ids framed (what crossed the wire).
func idBytes(ids []string) int64 {
	n := int64(4 * len(ids))
	for _, id := range ids {
		n += int64(len(id))
	}
	return n
}

func encodeIDs(ids []string) []byte { return agentapi.EncodeIDs(ids) }

func parseDigests(t etf.Tuple) (map[string]digestRow, error) {
	keys := make(map[string]agentapi.Key, erl.Int64(t[2]))
	if err := agentapi.ParseKeyFrames(erl.Bytes(t[1]), keys); err != nil {
		return nil, err
	}
	out := make(map[string]digestRow, len(keys))
	for id, k := range keys {
		out[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
	}
	return out, nil
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
