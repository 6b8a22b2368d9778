package consistency

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
)

// errNoDETSSide: neither side of a check is a single DETS file (or its
// slots cannot be drawn this way), so a slot sample draws from each side
// and looks up the other's draw (slotList).
var errNoDETSSide = errors.New("no DETS side")

// detsSlotList draws a sample by the slots of a DETS file (see
// SampleSlots and migctl_check's "sample by DETS slots"): about Sample ×
// Next / rows distinct random slots of the file (Next: its slot count),
// read on the DETS node, while the other side lists, in one pass on its
// own node, its sessions whose keys fall in the same slots. Both sides
// list the same part of the key space, so the listing compares like
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
	t, err := d.call(ctx, "dets_next", 0, d.term)
	if err != nil {
		return listing{}, err
	}
	next := erl.Int64(t[1])
	if t[2] != etf.Atom("phash2") || next <= 0 {
		log.Debug("DETS file not hashed with phash2: sampling by lookups", "hash", t[2])
		return listing{}, errNoDETSSide
	}
	most := max(counts, countt)
	k := next
	if most > 0 {
		k = min(next, (int64(o.Sample)*next+most-1)/most)
	}
	slotsBin := encodeSlots(drawSlots(next, k, o.Seed))
	// The listing side scans its table; the DETS side reads k slots.
	sctx, cancel := scanContext(ctx, most)
	defer cancel()
	type res struct {
		rows map[string]digestRow
		odd  oddRows
	}
	var rd, ro res
	var errD, errO error
	done := make(chan struct{})
	go func() {
		defer close(done)
		var t etf.Tuple
		t, errD = d.call(sctx, "dets_slot_rows", len(slotsBin), d.term, slotsBin, next)
		if errD == nil {
			rd.rows, rd.odd, errD = parseDigestsOdd(t)
		}
		if errD != nil {
			cancel()
		}
	}()
	var to etf.Tuple
	to, errO = other.call(sctx, "dets_slot_listing", len(slotsBin), other.term, slotsBin, next)
	if errO == nil {
		ro.rows, ro.odd, errO = parseDigestsOdd(to)
	} else {
		cancel()
	}
	<-done
	if errD != nil && strings.Contains(errD.Error(), "slot_function_mismatch") {
		log.Warn("DETS places keys otherwise than expected: sampling by lookups", "dets", d.name())
		return listing{}, errNoDETSSide
	}
	if err := errors.Join(errD, errO); err != nil {
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

func parseDigestsOdd(t etf.Tuple) (map[string]digestRow, oddRows, error) {
	m, err := parseDigests(t)
	if err != nil {
		return nil, oddRows{}, err
	}
	odd, err := parseOdd(t)
	return m, odd, err
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

func encodeSlots(slots []uint32) []byte {
	buf := make([]byte, 0, 4*len(slots))
	for _, s := range slots {
		buf = binary.BigEndian.AppendUint32(buf, s)
	}
	return buf
}
