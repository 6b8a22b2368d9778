package consistency

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"strings"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// errNoDETSSide: neither side of a check is a single DETS file (or its
// slots cannot be drawn this way), so a DETS-slot sample draws as
// SampleSlots does instead.
var errNoDETSSide = errors.New("no DETS side")

// detsSlotList draws a sample by the slots of a DETS file
// (SampleDETSSlots; migctl_check's "sample by DETS slots"): about
// Sample × Next / rows distinct random slots of the file (Next: its slot
// count), read on the DETS node, while the other side lists, in one pass
// on its own node, its sessions whose keys fall in the same slots. Both
// sides list the same part of the key space, so the listing compares like
// hash-ranges'. It returns errNoDETSSide when neither side is a single
// DETS file, its hash is not phash2 (files older than OTP R12), or the
// file places keys otherwise than expected.
func detsSlotList(ctx context.Context, src, tgt *side, o Options, counts, countt int64, log *slog.Logger) (listing, error) {
	d, other, dIsSource := src, tgt, true
	if !isDETS(src) {
		d, other, dIsSource = tgt, src, false
	}
	if !isDETS(d) {
		return listing{}, errNoDETSSide
	}
	var next int64
	var hash string
	if err := d.paced(ctx, "dets_next", func(st agentapi.Store) (int64, error) {
		var err error
		next, hash, err = agentapi.Sample{C: d.c}.DETSNext(ctx, d.node, st)
		return 0, err
	}); err != nil {
		return listing{}, err
	}
	if hash != "phash2" || next <= 0 {
		log.Debug("DETS file not hashed with phash2: sampling by slots of each side", "hash", hash)
		return listing{}, errNoDETSSide
	}
	most := max(counts, countt)
	k := next
	if most > 0 {
		k = min(next, (int64(o.Sample)*next+most-1)/most)
	}
	slots := drawSlots(next, k, o.Seed)
	// The listing side scans its table; the DETS side reads k slots.
	sctx, cancel := scanContext(ctx, most)
	defer cancel()
	rd, ro, err := both(sctx, d, other, func(ctx context.Context, s *side) (sampleRows, error) {
		var out sampleRows
		err := s.pass(ctx, "dets_slot_rows", func(p *side, st agentapi.Store) (int64, error) {
			stub := agentapi.Sample{C: p.c}
			var l agentapi.Listing
			var err error
			if s == d {
				l, err = stub.DETSSlotRows(ctx, p.node, st, slots, next)
			} else {
				l, err = stub.DETSSlotListing(ctx, p.node, st, slots, next)
			}
			out.add(l)
			return l.Bytes, err
		})
		return out, err
	})
	if err != nil && strings.Contains(err.Error(), "slot_function_mismatch") {
		log.Warn("DETS places keys otherwise than expected: sampling by slots of each side", "dets", d.name())
		return listing{}, errNoDETSSide
	}
	if err != nil {
		return listing{}, err
	}
	if dIsSource {
		return listing{src: rd.rows, tgt: ro.rows, odd: [2]oddRows{rd.odd, ro.odd}}, nil
	}
	return listing{src: ro.rows, tgt: rd.rows, odd: [2]oddRows{ro.odd, rd.odd}}, nil
}

func isDETS(s *side) bool {
	return len(s.parts) == 0 && s.store.Spec().Kind == backends.KindDETS
}

// sampleRows is a side's part of a sample: its sessions' digests and the
// rows met that are not sessions (a union side: every member's).
type sampleRows struct {
	rows map[string]digestRow
	odd  oddRows
}

func (r *sampleRows) add(l agentapi.Listing) {
	if r.rows == nil {
		r.rows = make(map[string]digestRow, len(l.Keys))
	}
	for id, k := range l.Keys {
		r.rows[id] = digestRow{Digest: k.Digest, LastAccessed: k.LastAccessed}
	}
	r.odd.add(l.Odd)
}

// sampleMembers says which of ids the side holds as sessions
// (migctl_check:sample_lookup/3, members): a DETS file answers by reading
// the slots of the ids directly, not one request to its server per id.
func (s *side) sampleMembers(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	err := s.pass(ctx, "sample_lookup", func(p *side, st agentapi.Store) (int64, error) {
		m, l, err := agentapi.Sample{C: p.c}.Members(ctx, p.node, st, ids)
		maps.Copy(out, m)
		return l.Bytes, err
	})
	return out, err
}

// sampleDigests lists the digests of the ids the side holds
// (migctl_check:sample_lookup/3, digests), read as sampleMembers reads.
func (s *side) sampleDigests(ctx context.Context, ids []string) (map[string]digestRow, error) {
	var out sampleRows
	err := s.pass(ctx, "sample_lookup", func(p *side, st agentapi.Store) (int64, error) {
		l, err := agentapi.Sample{C: p.c}.Digests(ctx, p.node, st, ids)
		out.add(l)
		return l.Bytes, err
	})
	if out.rows == nil {
		out.rows = map[string]digestRow{}
	}
	return out.rows, err
}

// drawSlots returns k distinct slots of [0, next), sorted, drawn with the
// seed (Floyd's algorithm: k steps whatever next is).
func drawSlots(next, k int64, seed uint64) []uint32 {
	rng := mrand.New(mrand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	if k >= next {
		out := make([]uint32, next)
		for i := range out {
			out[i] = uint32(i)
		}
		return out
	}
	chosen := make(map[int64]struct{}, k)
	for j := next - k; j < next; j++ {
		x := rng.Int64N(j + 1)
		if _, ok := chosen[x]; ok {
			x = j
		}
		chosen[x] = struct{}{}
	}
	out := make([]uint32, 0, k)
	for x := range chosen {
		out = append(out, uint32(x))
	}
	slices.Sort(out)
	return out
}
