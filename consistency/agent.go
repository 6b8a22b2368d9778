package consistency

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
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
// {ok, Binary, Count, Odd}: bucket sums (sums/3: <<Count:32, Sum:64>> per
// bucket) are added bucket by bucket; listings (digests, digests_of,
// get_many, slot_sample) are concatenated; the rows that are not sessions
// (Odd) are added up. A session lives on one member, so the merges are
// exact.
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
		b := erl.Bytes(t[1])
		acc := merged[1].([]byte)
		if fun == "sums" {
			if len(b) != len(acc) {
				return nil, fmt.Errorf("sums on %s: members disagree on the bucket count", s.name())
			}
			for i := 0; i+12 <= len(acc); i += 12 {
				binary.BigEndian.PutUint32(acc[i:], binary.BigEndian.Uint32(acc[i:])+binary.BigEndian.Uint32(b[i:]))
				binary.BigEndian.PutUint64(acc[i+4:], binary.BigEndian.Uint64(acc[i+4:])+binary.BigEndian.Uint64(b[i+4:]))
			}
		} else {
			acc = append(acc, b...)
		}
		merged[1] = acc
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
	b := erl.Bytes(t[3])
	if len(b) < 4 {
		return oddRows{}, errors.New("odd rows: truncated reply")
	}
	o := oddRows{N: int64(binary.BigEndian.Uint32(b))}
	for b = b[4:]; len(b) > 0; {
		if len(b) < 4 || len(b) < 4+int(binary.BigEndian.Uint32(b)) {
			return oddRows{}, errors.New("odd rows: bad frame")
		}
		n := int(binary.BigEndian.Uint32(b))
		o.Keys = append(o.Keys, string(b[4:4+n]))
		b = b[4+n:]
	}
	return o, nil
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

// bucketRange is one range and how many equal buckets it is cut into.
type bucketRange struct {
	backends.HashRange
	Buckets int
}

// bucket returns the i-th bucket of r as a range.
func (r bucketRange) bucket(i int) backends.HashRange {
	w := r.Hi - r.Lo
	lo := r.Lo + ceilDiv(uint64(i)*w, uint64(r.Buckets))
	hi := r.Lo + ceilDiv(uint64(i+1)*w, uint64(r.Buckets))
	return backends.HashRange{Lo: lo, Hi: hi}
}

// ceilDiv matches the node's placement: H is in bucket (H-Lo)*B div W, so
// bucket i starts at the least H with (H-Lo)*B >= i*W.
func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

func encodeRanges(rs []bucketRange) []byte {
	buf := make([]byte, 0, 20*len(rs))
	for _, r := range rs {
		buf = binary.BigEndian.AppendUint64(buf, r.Lo)
		buf = binary.BigEndian.AppendUint64(buf, r.Hi)
		buf = binary.BigEndian.AppendUint32(buf, uint32(r.Buckets))
	}
	return buf
}

// sums is migctl_check:sums/3: one pass, every bucket of every range. It
// also returns the rows of the whole table that are not sessions.
func (s *side) sums(ctx context.Context, rs []bucketRange, quantum int64) ([]backends.BucketSum, oddRows, error) {
	enc := encodeRanges(rs)
	opts := etf.List{}
	if quantum > 0 {
		opts = append(opts, etf.Tuple{etf.Atom("la_quantum"), quantum})
	}
	t, err := s.call(ctx, "sums", len(enc), s.term, enc, opts)
	if err != nil {
		return nil, oddRows{}, err
	}
	b, _ := t[1].([]byte)
	total := 0
	for _, r := range rs {
		total += r.Buckets
	}
	if len(b) != 12*total {
		return nil, oddRows{}, fmt.Errorf("sums on %s: %d bytes for %d buckets", s.name(), len(b), total)
	}
	out := make([]backends.BucketSum, total)
	for i := range out {
		out[i].Count = uint64(binary.BigEndian.Uint32(b[12*i:]))
		out[i].Sum = binary.BigEndian.Uint64(b[12*i+4:])
	}
	odd, err := parseOdd(t)
	return out, odd, err
}

// digestRow is one row as migctl_check:digests/3 lists it.
type digestRow struct {
	Digest       uint32
	LastAccessed int64
}

// digests lists the rows in rs, and the rows of the table that are not
// sessions and fall in rs.
func (s *side) digests(ctx context.Context, rs []bucketRange, limit int) (map[string]digestRow, oddRows, error) {
	enc := encodeRanges(rs)
	t, err := s.call(ctx, "digests", len(enc), s.term, enc, etf.List{etf.Tuple{etf.Atom("limit"), limit}})
	if err != nil {
		return nil, oddRows{}, err
	}
	m, err := parseDigests(t)
	if err != nil {
		return nil, oddRows{}, err
	}
	odd, err := parseOdd(t)
	return m, odd, err
}

// byIDs calls fun with the ids in batches of 5,000 and hands each reply
// to each.
func (s *side) byIDs(ctx context.Context, fun string, ids []string, each func(etf.Tuple) error) error {
	const batch = 5000
	for i := 0; i < len(ids); i += batch {
		buf := encodeIDs(ids[i:min(i+batch, len(ids))])
		t, err := s.call(ctx, fun, len(buf), s.term, buf)
		if err != nil {
			return err
		}
		if err := each(t); err != nil {
			return err
		}
	}
	return nil
}

// digestsOf lists the given ids' digests (those present), by lookup.
func (s *side) digestsOf(ctx context.Context, ids []string) (map[string]digestRow, error) {
	out := map[string]digestRow{}
	err := s.byIDs(ctx, "digests_of", ids, func(t etf.Tuple) error {
		m, err := parseDigests(t)
		maps.Copy(out, m)
		return err
	})
	return out, err
}

// membersOf says which of ids the store holds (migctl_check:members_of/2).
func (s *side) membersOf(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.byIDs(ctx, "members_of", ids, func(t etf.Tuple) error {
		b, _ := t[1].([]byte)
		for len(b) > 0 {
			if len(b) < 4 || len(b) < 4+int(binary.BigEndian.Uint32(b)) {
				return fmt.Errorf("members_of on %s: bad frame", s.name())
			}
			n := int(binary.BigEndian.Uint32(b))
			out[string(b[4:4+n])] = true
			b = b[4+n:]
		}
		return nil
	})
	return out, err
}

func encodeIDs(ids []string) []byte {
	var buf []byte
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(id)))
		buf = append(buf, id...)
	}
	return buf
}

func parseDigests(t etf.Tuple) (map[string]digestRow, error) {
	b, _ := t[1].([]byte)
	out := make(map[string]digestRow, erl.Int64(t[2]))
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("digests: truncated reply")
		}
		n := int(binary.BigEndian.Uint32(b))
		if len(b) < 4+n+12 {
			return nil, errors.New("digests: truncated reply")
		}
		id := string(b[4 : 4+n])
		out[id] = digestRow{Digest: binary.BigEndian.Uint32(b[4+n:]), LastAccessed: int64(binary.BigEndian.Uint64(b[8+n:]))}
		b = b[16+n:]
	}
	return out, nil
}

// getMany reads sessions by id without touching them, in batches.
func (s *side) getMany(ctx context.Context, ids []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(ids))
	const batch = 500
	for i := 0; i < len(ids); i += batch {
		buf := encodeIDs(ids[i:min(i+batch, len(ids))])
		t, err := s.call(ctx, "get_many", len(buf), s.term, buf)
		if err != nil {
			return nil, err
		}
		b, _ := t[1].([]byte)
		rows, err := backends.ParseFrames(b, int(erl.Int64(t[2])))
		if err != nil {
			return nil, fmt.Errorf("get_many on %s: %w", s.name(), err)
		}
		for _, r := range rows {
			out[string(r.ID)] = r.Blob
		}
	}
	return out, nil
}

// slotSample draws about n rows at random from the store without a scan,
// with their digests, and the drawn rows that are not sessions.
func (s *side) slotSample(ctx context.Context, n int, seed int64) (map[string]digestRow, oddRows, error) {
	t, err := s.call(ctx, "slot_sample", 0, s.term, n, seed)
	if err != nil {
		return nil, oddRows{}, err
	}
	m, err := parseDigests(t)
	if err != nil {
		return nil, oddRows{}, err
	}
	odd, err := parseOdd(t)
	return m, odd, err
}

// NativeCompare runs the native reference on node: migctl_check's loop
// that checksums both stores there, one after the other, in buckets hash
// buckets and compares the sums (no Go in the loop). Both stores must be
// readable on that node. It returns the number of differing buckets and
// the time the node measured.
func NativeCompare(ctx context.Context, c *erl.Client, node string, a, b backends.Store, buckets int) (int, time.Duration, error) {
	var wire, trips atomic.Int64
	sa := newSide(c, a, &wire, &trips, nil)
	sb := newSide(c, b, &wire, &trips, nil)
	t, err := c.Agent(ctx, node, "migctl_check:native_compare", sa.term, sb.term, buckets)
	if err != nil {
		return 0, 0, fmt.Errorf("native compare on %s: %w", node, err)
	}
	return int(erl.Int64(t[1])), time.Duration(erl.Int64(t[2])) * time.Microsecond, nil
}
