package backends

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrUnionWrite: a union of per-node stores cannot say which node a new
// session belongs to, so it refuses writes.
var ErrUnionWrite = errors.New("cannot write into a union of per-node stores")

// Union is the same node-local store (ETS or DETS) read on several nodes
// as one: erlmcp keeps a DETS file per node, each with the sessions that
// node served, while the Mnesia table they migrate to holds all of them.
// Comparing "the DETS store" with Mnesia means comparing the union.
// Reads fan out to every member; checksums add up bucket by bucket (a
// session lives on one node, so counts and sums of the members add to the
// sums of the whole); writes are refused.
type Union struct {
	Members []Store
}

var _ Store = (*Union)(nil)

// NewUnion returns a Union of the members (at least one, all of one spec).
func NewUnion(members ...Store) (*Union, error) {
	if len(members) == 0 {
		return nil, errors.New("union of no stores")
	}
	for _, m := range members[1:] {
		if m.Spec().Kind != members[0].Spec().Kind || m.Spec().Table != members[0].Spec().Table {
			return nil, fmt.Errorf("union of different stores: %s and %s", members[0].Spec(), m.Spec())
		}
	}
	return &Union{Members: members}, nil
}

// Spec is the members' spec.
func (u *Union) Spec() Spec { return u.Members[0].Spec() }

// Node lists the members' nodes, comma-separated (for reports).
func (u *Union) Node() string { return strings.Join(u.Nodes(), ",") }

// Nodes are the members' nodes.
func (u *Union) Nodes() []string {
	out := make([]string, len(u.Members))
	for i, m := range u.Members {
		out[i] = m.Node()
	}
	return out
}

// Describe adds up the members' sizes; the layout is the first bad one.
func (u *Union) Describe(ctx context.Context) (Info, error) {
	info := Info{Spec: u.Spec(), Node: u.Node(), Layout: "ok"}
	for _, m := range u.Members {
		i, err := m.Describe(ctx)
		if err != nil {
			return info, err
		}
		info.Exists = info.Exists || i.Exists
		info.Size += i.Size
		if i.Layout != "" && i.Layout != "ok" && info.Layout == "ok" {
			info.Layout = i.Layout
		}
	}
	return info, nil
}

// Count is the sum of the members' counts.
func (u *Union) Count(ctx context.Context) (int64, error) {
	var n int64
	for _, m := range u.Members {
		c, err := m.Count(ctx)
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// Stream is not offered: a cursor would have to name a member. Use Scan
// over each member.
func (u *Union) Stream(ctx context.Context, cursor Cursor, limit int) (Batch, error) {
	return Batch{}, errors.New("stream a union member by member")
}

// Get returns the first member's copy found.
func (u *Union) Get(ctx context.Context, id []byte) ([]byte, bool, error) {
	for _, m := range u.Members {
		b, ok, err := m.Get(ctx, id)
		if err != nil || ok {
			return b, ok, err
		}
	}
	return nil, false, nil
}

// Put is refused.
func (u *Union) Put(context.Context, []Row, PutMode) (PutResult, error) {
	return PutResult{}, ErrUnionWrite
}

// Delete is refused.
func (u *Union) Delete(context.Context, [][]byte) (int, error) { return 0, ErrUnionWrite }

// Checksum adds the members' bucket sums.
func (u *Union) Checksum(ctx context.Context, r HashRange, buckets int, opts ChecksumOptions) ([]BucketSum, error) {
	var out []BucketSum
	for _, m := range u.Members {
		s, err := m.Checksum(ctx, r, buckets, opts)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = s
			continue
		}
		for i := range out {
			out[i].Count += s[i].Count
			out[i].Sum += s[i].Sum
		}
	}
	return out, nil
}

// Release releases every member.
func (u *Union) Release(ctx context.Context) error {
	var errs []error
	for _, m := range u.Members {
		errs = append(errs, m.Release(ctx))
	}
	return errors.Join(errs...)
}

// NodesOf lists the nodes a store reads from (a Union's members, or one).
func NodesOf(s Store) []string {
	if u, ok := s.(*Union); ok {
		return u.Nodes()
	}
	return []string{s.Node()}
}
