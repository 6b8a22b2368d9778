package agentapi

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Sample is the stub of the sample half of migctl_check
// (erlang/agent/migctl_check.erl): how `migctl consistency check --sample`
// draws its sessions. Two ways, both uniform over the keys of the union of
// the two stores:
//
//   - Draw and Lookup: each side draws random hash slots of its own table
//     on its node, every slot with the same probability, and is then asked
//     about the other side's draw (membership or digests), one call per
//     batch. A DETS file is read directly on its node (not one request to
//     its server per slot or key), validated slot by slot.
//   - DETSNext, DETSSlotRows, DETSSlotListing: random slots of a DETS file
//     and, on the other side, a pass over its keys that keeps those hashing
//     to the same slots (no lookups on the file).
type Sample struct{ C *erl.Client }

func (s Sample) mod() module { return module{c: s.C, name: "migctl_check"} }

// Listing is a store's sessions as a sample lists them, the rows met that
// are not sessions, and the payload bytes that crossed the wire.
type Listing struct {
	Keys map[string]Key
	Odd  Odd
	// Method is how the node read the store: "ets" (an ETS table or a
	// Mnesia copy), "raw" (a DETS file read directly), "server" (through
	// the DETS server); empty for the DETS-slot calls.
	Method string
	Bytes  int64
}

// Rate is the probability Num/Den with which each hash slot is drawn.
type Rate struct{ Num, Den int64 }

// Draw is migctl_check:sample_draw/4: every row of a random set of st's
// hash slots, each slot drawn with probability r (seeded: the same seed on
// the same store draws the same slots), with the content digests, and the
// drawn rows that are not sessions. Reply
// {ok, <<IdLen:32, Id, Digest:32, LastAccessed:64/signed>>*, N, Odd, Method}.
func (s Sample) Draw(ctx context.Context, node string, st Store, r Rate, seed int64) (Listing, error) {
	const fun = "sample_draw"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), r.Num, r.Den, seed)
	if err != nil {
		return Listing{}, err
	}
	if err := m.okN(node, fun, t, 4); err != nil {
		return Listing{}, err
	}
	frames, oddBin, method := asBytes(t[1]), asBytes(t[3]), asAtom(t[4])
	if method == "" {
		return Listing{}, m.shape(node, fun, t[4])
	}
	out := Listing{Keys: make(map[string]Key, asInt(t[2])), Method: method, Bytes: int64(len(frames) + len(oddBin))}
	if err := parseKeys(frames, false, out.Keys); err != nil {
		return Listing{}, m.shape(node, fun, err.Error())
	}
	if out.Odd, err = ParseOdd(oddBin); err != nil {
		return Listing{}, m.shape(node, fun, err.Error())
	}
	return out, nil
}

// sampleBatch is the ids asked of a store per Members or Digests call.
const sampleBatch = 5000

// Members is migctl_check:sample_lookup/3 with members: which of ids st
// holds as sessions, in batches. Reply {ok, <<IdLen:32, Id>>*, N, Method}.
func (s Sample) Members(ctx context.Context, node string, st Store, ids []string) (map[string]bool, Listing, error) {
	out := make(map[string]bool, len(ids))
	l, err := s.lookup(ctx, node, st, ids, "members", func(b []byte) error {
		got, err := sampleIDFrames(b)
		for _, id := range got {
			out[id] = true
		}
		return err
	})
	return out, l, err
}

// Digests is migctl_check:sample_lookup/3 with digests: the listing of the
// ids st holds as sessions, in batches. Reply
// {ok, <<IdLen:32, Id, Digest:32, LastAccessed:64/signed>>*, N, Method}.
func (s Sample) Digests(ctx context.Context, node string, st Store, ids []string) (Listing, error) {
	keys := make(map[string]Key, len(ids))
	l, err := s.lookup(ctx, node, st, ids, "digests", func(b []byte) error { return parseKeys(b, false, keys) })
	l.Keys = keys
	return l, err
}

func (s Sample) lookup(ctx context.Context, node string, st Store, ids []string, what string, parse func([]byte) error) (Listing, error) {
	const fun = "sample_lookup"
	m := s.mod()
	var l Listing
	for i := 0; i < len(ids); i += sampleBatch {
		req := EncodeIDs(ids[i:min(i+sampleBatch, len(ids))])
		t, err := m.call(ctx, node, fun, st.term(s.C), req, etf.Atom(what))
		if err != nil {
			return l, err
		}
		if err := m.okN(node, fun, t, 3); err != nil {
			return l, err
		}
		b := asBytes(t[1])
		if l.Method = asAtom(t[3]); l.Method == "" {
			return l, m.shape(node, fun, t[3])
		}
		l.Bytes += int64(len(req) + len(b))
		if err := parse(b); err != nil {
			return l, m.shape(node, fun, err.Error())
		}
	}
	return l, nil
}

// DETSNext is migctl_check:dets_next/1: the slot count of a DETS file
// (what its slot function needs) and its hash function (phash2 or phash).
// Reply {ok, Next, HashMethod}.
func (s Sample) DETSNext(ctx context.Context, node string, st Store) (next int64, hash string, err error) {
	const fun = "dets_next"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C))
	if err != nil {
		return 0, "", err
	}
	if err := m.okN(node, fun, t, 2); err != nil {
		return 0, "", err
	}
	if hash = asAtom(t[2]); hash == "" {
		return 0, "", m.shape(node, fun, t)
	}
	return asInt(t[1]), hash, nil
}

// DETSSlotRows is migctl_check:dets_slot_rows/3: every row of the given
// slots of a DETS file of next slots (an error naming
// slot_function_mismatch when the file places keys otherwise). Reply
// {ok, <<IdLen:32, Id, Digest:32, LastAccessed:64/signed>>*, N, Odd}.
func (s Sample) DETSSlotRows(ctx context.Context, node string, st Store, slots []uint32, next int64) (Listing, error) {
	return s.slotCall(ctx, node, "dets_slot_rows", st, slots, next)
}

// DETSSlotListing is migctl_check:dets_slot_listing/3: the sessions of st
// (any store) whose keys fall in the given slots of a DETS file of next
// slots, found in one pass over st's keys. Reply as DETSSlotRows.
func (s Sample) DETSSlotListing(ctx context.Context, node string, st Store, slots []uint32, next int64) (Listing, error) {
	return s.slotCall(ctx, node, "dets_slot_listing", st, slots, next)
}

func (s Sample) slotCall(ctx context.Context, node, fun string, st Store, slots []uint32, next int64) (Listing, error) {
	m := s.mod()
	req := EncodeSlots(slots)
	t, err := m.call(ctx, node, fun, st.term(s.C), req, next)
	if err != nil {
		return Listing{}, err
	}
	if err := m.okN(node, fun, t, 3); err != nil {
		return Listing{}, err
	}
	frames, oddBin := asBytes(t[1]), asBytes(t[3])
	out := Listing{Keys: make(map[string]Key, asInt(t[2])), Bytes: int64(len(req) + len(frames) + len(oddBin))}
	if err := parseKeys(frames, false, out.Keys); err != nil {
		return Listing{}, m.shape(node, fun, err.Error())
	}
	if out.Odd, err = ParseOdd(oddBin); err != nil {
		return Listing{}, m.shape(node, fun, err.Error())
	}
	return out, nil
}

// EncodeSlots is the slots argument: <<Slot:32>>*.
func EncodeSlots(slots []uint32) []byte {
	buf := make([]byte, 0, 4*len(slots))
	for _, s := range slots {
		buf = binary.BigEndian.AppendUint32(buf, s)
	}
	return buf
}

// sampleIDFrames reads <<IdLen:32, Id>>*; a truncated frame is an error.
func sampleIDFrames(b []byte) ([]string, error) {
	var out []string
	for len(b) > 0 {
		if len(b) < 4 || len(b)-4 < int(binary.BigEndian.Uint32(b)) {
			return out, fmt.Errorf("id frames truncated")
		}
		n := int(binary.BigEndian.Uint32(b))
		out = append(out, string(b[4:4+n]))
		b = b[4+n:]
	}
	return out, nil
}
