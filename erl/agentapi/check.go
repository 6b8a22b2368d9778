package agentapi

import (
	"context"
	"fmt"
	"time"

	"github.com/erlmcp/migctl/erl"
)

// Check is the stub of migctl_check (erlang/agent/migctl_check.erl), the
// part of `migctl consistency' that is not bucket sums (those are
// Buckets'): samples, reads by id, the size of a store's data and the
// native comparison `make bench' measures against. So far it covers the
// calls the bench kit makes; package consistency still calls the sample
// functions through its own side type (issue 12).
type Check struct{ C *erl.Client }

func (s Check) mod() module { return module{c: s.C, name: "migctl_check"} }

// DataSize is migctl_check:data_size/1: what shipping every session of st
// would cost (ids plus the sessions' external size), and the row count.
// Reply {ok, Bytes, Rows}.
func (s Check) DataSize(ctx context.Context, node string, st Store) (bytes, rows int64, err error) {
	const fun = "data_size"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C))
	if err != nil {
		return 0, 0, err
	}
	if err := m.okN(node, fun, t, 2); err != nil {
		return 0, 0, err
	}
	return asInt(t[1]), asInt(t[2]), nil
}

// NativeCompare is migctl_check:native_compare/3: a loop on node that
// checksums a and b (both readable there) one after the other in buckets
// hash buckets and compares the sums. Reply {ok, DifferingBuckets, Micros}.
func (s Check) NativeCompare(ctx context.Context, node string, a, b Store, buckets int) (int, time.Duration, error) {
	const fun = "native_compare"
	m := s.mod()
	t, err := m.call(ctx, node, fun, a.term(s.C), b.term(s.C), buckets)
	if err != nil {
		return 0, 0, err
	}
	if err := m.okN(node, fun, t, 2); err != nil {
		return 0, 0, err
	}
	return int(asInt(t[1])), time.Duration(asInt(t[2])) * time.Microsecond, nil
}

// SlotSample is migctl_check:slot_sample/3: about n sessions drawn from
// random hash slots of st (no scan), with their content digests, and the
// drawn rows that are not sessions. Reply {ok, KeyFrames, N, Odd}.
func (s Check) SlotSample(ctx context.Context, node string, st Store, n int, seed int64) (map[string]Key, Odd, error) {
	const fun = "slot_sample"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), n, seed)
	if err != nil {
		return nil, Odd{}, err
	}
	if err := m.okN(node, fun, t, 3); err != nil {
		return nil, Odd{}, err
	}
	keys := make(map[string]Key, asInt(t[2]))
	if err := parseKeys(asBytes(t[1]), false, keys); err != nil {
		return nil, Odd{}, m.shape(node, fun, err.Error())
	}
	odd, err := ParseOdd(asBytes(t[3]))
	if err != nil {
		return nil, Odd{}, m.shape(node, fun, err.Error())
	}
	return keys, odd, nil
}

// GetMany is migctl_check:get_many/2: the sessions of ids that st holds
// (term_to_binary blobs by id), read without touching them. Reply
// {ok, <<IdLen:32, Id, BlobLen:32, Blob>>*, N}.
func (s Check) GetMany(ctx context.Context, node string, st Store, ids []string) (map[string][]byte, error) {
	const fun = "get_many"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), EncodeIDs(ids))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 2); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, asInt(t[2]))
	for b := asBytes(t[1]); len(b) > 0; {
		id, rest, ok := frame(b)
		var blob []byte
		if ok {
			blob, rest, ok = frame(rest)
		}
		if !ok {
			return nil, m.shape(node, fun, fmt.Sprintf("bad frame at %d bytes from the end", len(b)))
		}
		out[string(id)] = blob
		b = rest
	}
	return out, nil
}

// MembersOf is migctl_check:members_of/2: which of ids st holds (a DETS
// file answers without decoding sessions). Reply {ok, <<IdLen:32, Id>>*, N}.
func (s Check) MembersOf(ctx context.Context, node string, st Store, ids []string) (map[string]bool, error) {
	const fun = "members_of"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), EncodeIDs(ids))
	if err != nil {
		return nil, err
	}
	if err := m.okN(node, fun, t, 2); err != nil {
		return nil, err
	}
	out := make(map[string]bool, asInt(t[2]))
	for b := asBytes(t[1]); len(b) > 0; {
		id, rest, ok := frame(b)
		if !ok {
			return nil, m.shape(node, fun, "bad frame")
		}
		out[string(id)] = true
		b = rest
	}
	return out, nil
}
