package agentapi

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Incr is the stub of migctl_incr (erlang/agent/migctl_incr.erl), the
// node-side half of the monitor's incremental verify (package
// consistency). Every method also returns the bytes it moved (request and
// reply binaries), since a cycle's wire cost is what it is measured on.
type Incr struct{ C *erl.Client }

func (s Incr) mod() module { return module{c: s.C, name: "migctl_incr"} }

// Digest is a session's digest as migctl_check computes it (the one the
// full check compares) and its last_accessed, which travels apart so the
// caller applies its tolerance exactly.
type Digest struct {
	Digest       uint32
	LastAccessed int64
}

// Coverage is what a node's change recorder covers for a table.
type Coverage struct {
	// Running: a recorder runs on the node (false: none, or not loaded).
	Running bool
	// Started is when the recorder started (ms): another value than the
	// last cycle's means it restarted.
	Started int64
	// Subscribed: it records the table now; Since (ms) is then when its
	// record of the table starts to be complete.
	Subscribed bool
	Since      int64
	// Cleared is when the table was last cleared (ms; 0: never).
	Cleared int64
}

// Changes is the reply of changes/3.
type Changes struct {
	// TooMany: the record lists more keys than asked for (Count of them);
	// nothing else is listed.
	TooMany bool
	// Count is the number of keys the record listed (the carried ids not
	// counted).
	Count int
	// Now is the recorder's time (ms) when the call began: every change
	// handled after the reply has a time at or after it.
	Now      int64
	Coverage Coverage
	// Present: the listed ids the node holds, with their digests; Absent:
	// the others.
	Present map[string]Digest
	Absent  []string
}

// Mark returns the recorder's time and coverage before a full pass.
// Reply: {ok, NowMs, Coverage}.
func (s Incr) Mark(ctx context.Context, node string, st Store) (now int64, cov Coverage, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "mark", st.term(s.C))
	if err != nil {
		return 0, Coverage{}, err
	}
	if err := m.okN(node, "mark", t, 2); err != nil {
		return 0, Coverage{}, err
	}
	return asInt(t[1]), parseCoverage(t[2]), nil
}

// Changes lists the keys of st's table the node's recorder has as
// changed at or after since (ms), plus the pending ids, each once, with
// the node's digests; beyond maxKeys changed keys it answers TooMany.
// Reply: {ok, Z(Present), Z(Absent), Count, NowMs, Coverage} |
// {ok, too_many, Count, NowMs, Coverage}.
func (s Incr) Changes(ctx context.Context, node string, st Store, since int64, maxKeys int, pending []string) (*Changes, int64, error) {
	m := s.mod()
	opts := etf.List{etf.Tuple{etf.Atom("max_keys"), maxKeys}}
	var wire int64
	if len(pending) > 0 {
		z := zip(encodeIDs16(pending))
		opts, wire = append(opts, etf.Tuple{etf.Atom("pending"), z}), int64(len(z))
	}
	t, err := m.call(ctx, node, "changes", st.term(s.C), since, opts)
	if err != nil {
		return nil, wire, err
	}
	if len(t) == 5 && t[0] == etf.Atom("ok") && t[1] == etf.Atom("too_many") {
		return &Changes{TooMany: true, Count: int(asInt(t[2])), Now: asInt(t[3]), Coverage: parseCoverage(t[4])}, wire, nil
	}
	if err := m.okN(node, "changes", t, 5); err != nil {
		return nil, wire, err
	}
	pz, az := asBytes(t[1]), asBytes(t[2])
	wire += int64(len(pz) + len(az))
	pb, err1 := unzip(pz)
	ab, err2 := unzip(az)
	if err := errors.Join(err1, err2); err != nil {
		return nil, wire, m.shape(node, "changes", err)
	}
	c := &Changes{Count: int(asInt(t[3])), Now: asInt(t[4]), Coverage: parseCoverage(t[5])}
	if c.Present, err = parsePresent(pb); err != nil {
		return nil, wire, m.shape(node, "changes", err)
	}
	if c.Absent, err = parseIDs16(ab); err != nil {
		return nil, wire, m.shape(node, "changes", err)
	}
	return c, wire, nil
}

// DigestsAt returns st's digests of ids on node; absent ids are left out.
// Reply: {ok, Z(<<0>> | <<1, Digest:32, LA:64/signed>> per id), N}.
func (s Incr) DigestsAt(ctx context.Context, node string, st Store, ids []string) (map[string]Digest, int64, error) {
	m := s.mod()
	buf := zip(encodeIDs16(ids))
	wire := int64(len(buf))
	t, err := m.call(ctx, node, "digests_at", st.term(s.C), buf)
	if err != nil {
		return nil, wire, err
	}
	if err := m.okN(node, "digests_at", t, 2); err != nil {
		return nil, wire, err
	}
	z := asBytes(t[1])
	wire += int64(len(z))
	b, err := unzip(z)
	if err != nil {
		return nil, wire, m.shape(node, "digests_at", err)
	}
	out := make(map[string]Digest, len(ids))
	for _, id := range ids {
		switch {
		case len(b) >= 1 && b[0] == 0:
			b = b[1:]
		case len(b) >= 13 && b[0] == 1:
			out[id] = Digest{Digest: binary.BigEndian.Uint32(b[1:]), LastAccessed: int64(binary.BigEndian.Uint64(b[5:]))}
			b = b[13:]
		default:
			return nil, wire, m.shape(node, "digests_at", fmt.Sprintf("short or bad reply at %q", id))
		}
	}
	if len(b) != 0 {
		return nil, wire, m.shape(node, "digests_at", "trailing bytes")
	}
	return out, wire, nil
}

// ChangedAt returns when the node's recorder last saw each id change (ms;
// 0: no record of it). Reply: {ok, <<Millis:64/signed>> per id, N}.
func (s Incr) ChangedAt(ctx context.Context, node string, st Store, ids []string) (map[string]int64, int64, error) {
	m := s.mod()
	buf := zip(encodeIDs16(ids))
	wire := int64(len(buf))
	t, err := m.call(ctx, node, "changed_at", st.term(s.C), buf)
	if err != nil {
		return nil, wire, err
	}
	if err := m.okN(node, "changed_at", t, 2); err != nil {
		return nil, wire, err
	}
	b := asBytes(t[1])
	wire += int64(len(b))
	if len(b) != 8*len(ids) {
		return nil, wire, m.shape(node, "changed_at", fmt.Sprintf("%d bytes for %d ids", len(b), len(ids)))
	}
	out := make(map[string]int64, len(ids))
	for i, id := range ids {
		out[id] = int64(binary.BigEndian.Uint64(b[8*i:]))
	}
	return out, wire, nil
}

// Native runs the native reference of a cycle on node (the record side's
// node): the changed keys since `since`, both sides' digests of them (the
// other side through erpc when otherNode is another node), compared in
// Erlang. Reply: {ok, Changed, Differing, Micros}.
func (s Incr) Native(ctx context.Context, node string, rec Store, otherNode string, other Store, since int64) (changed, differ int, d time.Duration, err error) {
	m := s.mod()
	t, err := m.call(ctx, node, "native", rec.term(s.C), etf.Atom(otherNode), other.term(s.C), since)
	if err != nil {
		return 0, 0, 0, err
	}
	if err := m.okN(node, "native", t, 3); err != nil {
		return 0, 0, 0, err
	}
	return int(asInt(t[1])), int(asInt(t[2])), time.Duration(asInt(t[3])) * time.Microsecond, nil
}

// parseCoverage reads {coverage, Started, Since | undefined, Cleared};
// anything else (no_recorder) is a recorder that does not run.
func parseCoverage(t etf.Term) Coverage {
	tt, ok := t.(etf.Tuple)
	if !ok || len(tt) != 4 || tt[0] != etf.Atom("coverage") {
		return Coverage{}
	}
	c := Coverage{Running: true, Started: asInt(tt[1]), Cleared: asInt(tt[3]), Since: -1}
	if tt[2] != etf.Atom("undefined") {
		c.Since, c.Subscribed = asInt(tt[2]), true
	}
	return c
}

// zip and unzip are zlib (Erlang's zlib:compress/uncompress): erlmcp's
// ids are 32 hex digits, 16 bytes of entropy, half their size compressed.
func zip(b []byte) []byte {
	var out bytes.Buffer
	w := zlib.NewWriter(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	return out.Bytes()
}

func unzip(b []byte) ([]byte, error) {
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(r); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// encodeIDs16 frames ids as <<Len:16, Id/binary>>* (erlmcp's ids are
// short binaries).
func encodeIDs16(ids []string) []byte {
	n := 0
	for _, id := range ids {
		n += 2 + len(id)
	}
	buf := make([]byte, 0, n)
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(id)))
		buf = append(buf, id...)
	}
	return buf
}

func parseIDs16(b []byte) ([]string, error) {
	var out []string
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return nil, errors.New("truncated id frame")
		}
		n := int(binary.BigEndian.Uint16(b))
		out = append(out, string(b[2:2+n]))
		b = b[2+n:]
	}
	return out, nil
}

// parsePresent reads <<Len:16, Id, Digest:32, LA:64/signed>>*.
func parsePresent(b []byte) (map[string]Digest, error) {
	out := map[string]Digest{}
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated row frame")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n+12 {
			return nil, errors.New("truncated row frame")
		}
		out[string(b[2:2+n])] = Digest{Digest: binary.BigEndian.Uint32(b[2+n:]), LastAccessed: int64(binary.BigEndian.Uint64(b[6+n:]))}
		b = b[14+n:]
	}
	return out, nil
}
