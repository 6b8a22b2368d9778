package benchkit

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// The consistency benches (issue 4's "Speed", `make bench`): a harness
// sets up the stores and calls them; each measures migctl's
// consistency.Check and its native reference in the same process and run,
// so the ratio is fair on a noisy machine. InjectDifferences damages a
// store on purpose, which is why this lives here and not in consistency.

// CheckBench is one measured check.
type CheckBench struct {
	Name string `json:"name"`
	// Rows and DataBytes describe the source (DataBytes: ids plus the
	// sessions' external size, what shipping every row would cost).
	Rows      int64 `json:"rows"`
	DataBytes int64 `json:"data_bytes"`
	// Check is migctl's time; Native the in-node reference's (0 when not
	// measured); Ratio = Check / Native.
	Check  time.Duration `json:"check_ns"`
	Native time.Duration `json:"native_ns,omitempty"`
	Ratio  float64       `json:"ratio,omitempty"`
	// BytesMoved by migctl, and as a share of DataBytes.
	BytesMoved    int64   `json:"bytes_moved"`
	BytesFraction float64 `json:"bytes_fraction"`
	// Injected differences and how many of them the check reported.
	Injected int `json:"injected,omitempty"`
	Found    int `json:"found,omitempty"`
	// Runs holds every (check, native) pair when several were measured;
	// Check and Native are then their medians.
	Runs   [][2]time.Duration  `json:"runs_ns,omitempty"`
	Report *consistency.Report `json:"report"`
}

// String is the line `make bench` prints.
func (r CheckBench) String() string {
	s := fmt.Sprintf("BENCH %s rows=%d data=%.1fMB check=%.3fs bytes=%d (%.4f%% of data)",
		r.Name, r.Rows, float64(r.DataBytes)/1e6, r.Check.Seconds(), r.BytesMoved, 100*r.BytesFraction)
	if r.Native > 0 {
		s += fmt.Sprintf(" native=%.3fs ratio=%.2f", r.Native.Seconds(), r.Ratio)
	}
	if r.Injected > 0 {
		s += fmt.Sprintf(" found=%d/%d", r.Found, r.Injected)
	}
	if len(r.Runs) > 1 {
		s += fmt.Sprintf(" (medians of %d runs:", len(r.Runs))
		for _, x := range r.Runs {
			s += fmt.Sprintf(" %.2f/%.2f", x[0].Seconds(), x[1].Seconds())
		}
		s += ")"
	}
	return s
}

// DataSize measures a store on its node (ids plus external size of the
// sessions, and the row count); a union adds up its members.
func DataSize(ctx context.Context, c *erl.Client, s backends.Store) (bytes, rows int64, err error) {
	for _, m := range members(s) {
		b, r, err := agentapi.Check{C: c}.DataSize(ctx, m.Node(), apiStore(m))
		if err != nil {
			return 0, 0, err
		}
		bytes, rows = bytes+b, rows+r
	}
	return bytes, rows, nil
}

func members(s backends.Store) []backends.Store {
	if u, ok := s.(*backends.Union); ok {
		return u.Members
	}
	return []backends.Store{s}
}

// apiStore names a (single-node) store for the agent stubs.
func apiStore(s backends.Store) agentapi.Store {
	sp := s.Spec()
	return agentapi.Store{Kind: string(sp.Kind), Table: sp.Table, File: sp.File, Create: sp.Create}
}

// NativeCompare runs the native reference on node: migctl_check's loop
// that checksums both stores there, one after the other, in buckets hash
// buckets and compares the sums (no Go in the loop). Both stores must be
// readable on that node. It returns the number of differing buckets and
// the time the node measured.
func NativeCompare(ctx context.Context, c *erl.Client, node string, a, b backends.Store, buckets int) (int, time.Duration, error) {
	n, d, err := agentapi.Check{C: c}.NativeCompare(ctx, node, apiStore(a), apiStore(b), buckets)
	if err != nil {
		return 0, 0, fmt.Errorf("native compare on %s: %w", node, err)
	}
	return n, d, nil
}

// BenchFull measures a full check of source against target next to the
// native reference (NativeCompare on nativeNode, where both stores must be
// readable), runs times, alternating which goes first so that caches and
// neighbours' load fall on both alike; Check and Native are the medians.
// opts.Client is required.
func BenchFull(ctx context.Context, source, target backends.Store, nativeNode string, runs int, opts consistency.Options) (CheckBench, error) {
	r := CheckBench{Name: "full"}
	var err error
	if r.DataBytes, r.Rows, err = DataSize(ctx, opts.Client, source); err != nil {
		return r, err
	}
	runs = max(runs, 1)
	buckets := int(max(r.Rows/64, 16))
	var checks, natives []time.Duration
	var last *consistency.Report
	for i := 0; i < runs; i++ {
		native := func() error {
			if nativeNode == "" {
				return nil
			}
			_, d, err := NativeCompare(ctx, opts.Client, nativeNode, source, target, buckets)
			natives = append(natives, d)
			return err
		}
		check := func() error {
			rep, err := consistency.Check(ctx, source, target, opts)
			if err == nil {
				checks, last = append(checks, rep.Duration), rep
			}
			return err
		}
		first, second := native, check
		if i%2 == 1 {
			first, second = check, native
		}
		if err := first(); err != nil {
			return r, err
		}
		if err := second(); err != nil {
			return r, err
		}
		var nd time.Duration
		if len(natives) > 0 {
			nd = natives[len(natives)-1]
		}
		r.Runs = append(r.Runs, [2]time.Duration{checks[len(checks)-1], nd})
	}
	r.fill(last)
	r.Check = medianDuration(checks)
	if len(natives) > 0 {
		r.Native = medianDuration(natives)
		r.Ratio = r.Check.Seconds() / r.Native.Seconds()
	}
	return r, nil
}

func medianDuration(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchSample measures a sample check of n sessions, runs times (each
// with its own seed unless opts.Seed is set); Check is the median.
func BenchSample(ctx context.Context, source, target backends.Store, n, runs int, opts consistency.Options) (CheckBench, error) {
	r := CheckBench{Name: fmt.Sprintf("sample-%d", n)}
	var err error
	if r.DataBytes, r.Rows, err = DataSize(ctx, opts.Client, source); err != nil {
		return r, err
	}
	opts.Sample = n
	var ds []time.Duration
	var last *consistency.Report
	for range max(runs, 1) {
		rep, err := consistency.Check(ctx, source, target, opts)
		if err != nil {
			return r, err
		}
		ds, last = append(ds, rep.Duration), rep
		r.Runs = append(r.Runs, [2]time.Duration{rep.Duration, 0})
	}
	r.fill(last)
	r.Check = medianDuration(ds)
	return r, nil
}

func (r *CheckBench) fill(rep *consistency.Report) {
	r.Report, r.Check, r.BytesMoved = rep, rep.Duration, rep.BytesMoved
	if r.DataBytes > 0 {
		r.BytesFraction = float64(rep.BytesMoved) / float64(r.DataBytes)
	}
	if r.Native > 0 {
		r.Ratio = r.Check.Seconds() / r.Native.Seconds()
	}
}

// InjectDifferences damages n sessions of target scattered at random over
// the key space (drawn with the agent's slot sampler): a third deleted, the
// rest overwritten with another session's value. It returns the damaged
// ids, sorted.
func InjectDifferences(ctx context.Context, c *erl.Client, target backends.Store, n int, seed uint64) ([]string, error) {
	st := apiStore(target)
	drawn, _, err := agentapi.Check{C: c}.SlotSample(ctx, target.Node(), st, 2*n+2, int64(seed))
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(drawn))
	for id := range drawn {
		ids = append(ids, id)
	}
	sort.Strings(ids) // map order is random; the seed decides
	if len(ids) < n+1 {
		return nil, fmt.Errorf("inject: only %d sessions drawn", len(ids))
	}
	rng := mrand.New(mrand.NewPCG(seed, seed+1))
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	victims, donor := ids[:n], ids[n]
	blobs, err := agentapi.Check{C: c}.GetMany(ctx, target.Node(), st, []string{donor})
	if err != nil {
		return nil, err
	}
	var dels [][]byte
	var rows []backends.Row
	for i, id := range victims {
		if i%3 == 0 {
			dels = append(dels, []byte(id))
		} else {
			rows = append(rows, backends.Row{ID: []byte(id), Blob: blobs[donor]})
		}
	}
	if _, err := target.Delete(ctx, dels); err != nil {
		return nil, err
	}
	if _, err := target.Put(ctx, rows, backends.Overwrite); err != nil {
		return nil, err
	}
	sort.Strings(victims)
	return victims, nil
}

// BenchDifferences injects n scattered differences into target, runs a
// full check and reports time, bytes and how many were found.
func BenchDifferences(ctx context.Context, source, target backends.Store, n int, opts consistency.Options) (CheckBench, []string, error) {
	r := CheckBench{Name: fmt.Sprintf("full-%d-differences", n), Injected: n}
	var err error
	if r.DataBytes, r.Rows, err = DataSize(ctx, opts.Client, source); err != nil {
		return r, nil, err
	}
	ids, err := InjectDifferences(ctx, opts.Client, target, n, 42)
	if err != nil {
		return r, nil, err
	}
	rep, err := consistency.Check(ctx, source, target, opts)
	if err != nil {
		return r, ids, err
	}
	r.fill(rep)
	found := map[string]bool{}
	for _, d := range rep.Differences {
		found[d.ID] = true
	}
	for _, id := range ids {
		if found[id] {
			r.Found++
		}
	}
	return r, ids, nil
}
