package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// bucketSum is one hash bucket of a node's local copy (count, sum of the
// whole-record digests, latest write time).
type bucketSum = bucketdiff.Sum

// keyInfo is what a node says about one key of its local copy: the
// record's write time (its 4th field, ms), the session's created_at and
// last_accessed (-1 if absent), and the whole record's digest.
type keyInfo = agentapi.Key

// bucketsFor is the number of buckets for a table of about size rows:
// the fixed Options.Buckets, or about 8 rows a bucket (at least 1024, at
// most 65536), so that a thousand changed keys touch a small share of the
// buckets and the drill-down lists few keys.
func (cl *Cluster) bucketsFor(size int64) int {
	if cl.buckets > 0 {
		return cl.buckets
	}
	return int(min(max(size/8, 1024), 1<<16))
}

// tableSize is the largest size of tab any node of st reports.
func tableSize(st *Status, tab string) int64 {
	var n int64
	if st == nil {
		return 0
	}
	for _, v := range st.Nodes {
		for _, t := range v.Tables {
			if t.Name == tab {
				n = max(n, t.Size)
			}
		}
	}
	return n
}

// localCopy is a node's local copy of tab as the bucket protocol names it.
func localCopy(tab string) agentapi.Store { return agentapi.Store{Kind: "mnesia", Table: tab} }

// recordKeys: the frames of the plan and the rechecks carry the times.
var recordKeys = agentapi.KeyOptions{Digest: agentapi.DigestRecord, Times: true}

// bucketSums checksums node's local copy of table in n fixed buckets of
// the whole hash space (bucket B holds H*n div 2^32), with the latest
// write time of each (migctl_buckets:sums/3).
func (cl *Cluster) bucketSums(ctx context.Context, node, table string, n int) ([]bucketSum, error) {
	r, err := agentapi.Buckets{C: cl.c}.Sums(ctx, node, localCopy(table), bucketdiff.Even(n),
		agentapi.SumOptions{Digest: agentapi.DigestRecord, MaxWritten: true})
	if err != nil {
		return nil, err
	}
	return r.Sums, nil
}

// bucketKeys lists the keys of the given buckets (of n) on node.
func (cl *Cluster) bucketKeys(ctx context.Context, node, table string, n int, idx []int) (map[string]keyInfo, error) {
	out := map[string]keyInfo{}
	// Each call folds the whole local copy once; the chunk bounds the
	// reply (about 8 keys of ~70 bytes a bucket).
	const chunk = 8192
	for start := 0; start < len(idx); start += chunk {
		rs := bucketdiff.Merge(bucketdiff.Spans(bucketdiff.Even(n), idx[start:min(start+chunk, len(idx))]))
		r, err := agentapi.Buckets{C: cl.c}.Keys(ctx, node, localCopy(table), rs, recordKeys)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, r.Keys)
	}
	return out, nil
}

// keyInfos says what node's local copy holds for the given ids (absent ids
// are not in the map).
func (cl *Cluster) keyInfos(ctx context.Context, node, table string, ids []string) (map[string]keyInfo, error) {
	r, err := agentapi.Buckets{C: cl.c}.OfIDs(ctx, node, localCopy(table), ids, 5000, recordKeys)
	if err != nil {
		return nil, err
	}
	return r.Keys, nil
}

// diffBuckets returns the indexes where a and b differ.
func diffBuckets(a, b []bucketSum) []int { return bucketdiff.Diff(a, b) }

// NodeReplica is one node's copy of a table.
type NodeReplica struct {
	Node     string `json:"node"`
	Size     int64  `json:"size"`
	Checksum string `json:"checksum,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ReplicaDiff says how one node's copy differs from the reference copy.
type ReplicaDiff struct {
	Node      string `json:"node"`
	Reference string `json:"reference"`
	// Missing: keys the reference has and this node lacks; Extra: the
	// reverse; Different: keys on both with different records.
	Missing   int      `json:"missing"`
	Extra     int      `json:"extra"`
	Different int      `json:"different"`
	Sample    []string `json:"sample,omitempty"` // a few differing keys
	// Transient: keys that differed at first and agreed on a recheck
	// (writes in flight); not counted above.
	Transient int `json:"transient,omitempty"`
	// keys are all the differing keys (Sample holds a few).
	keys []string
}

// Keys is the number of keys that differ.
func (d ReplicaDiff) Keys() int { return d.Missing + d.Extra + d.Different }

// ReplicationReport is the result of VerifyReplication for one table.
type ReplicationReport struct {
	Table      string        `json:"table"`
	Nodes      []NodeReplica `json:"nodes"`
	Consistent bool          `json:"consistent"`
	Reference  string        `json:"reference,omitempty"`
	Diffs      []ReplicaDiff `json:"diffs,omitempty"`
	// Transient counts keys that differed between copies at first and
	// agreed when read again (writes in flight during the checksums).
	Transient int `json:"transient,omitempty"`
}

// Text renders the report in the runbook's shape.
func (r *ReplicationReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Table: %s\n", r.Table)
	// Under writes the first reading's sizes and checksums differ between
	// copies even when every key agrees once read again: say which
	// reading they are, so that differing numbers above "consistent" do
	// not read as a contradiction.
	when := ""
	if r.Consistent && r.Transient > 0 {
		when = " (first reading, writes in flight)"
	}
	for _, n := range r.Nodes {
		if n.Error != "" {
			fmt.Fprintf(&b, "Node: %s, error: %s\n", n.Node, n.Error)
			continue
		}
		fmt.Fprintf(&b, "Node: %s, Table size: %d, Checksum: %s%s\n", n.Node, n.Size, n.Checksum, when)
	}
	if r.Consistent {
		if r.Transient > 0 {
			fmt.Fprintf(&b, "All nodes consistent: the copies differed only by %d keys being written, and every one agreed when read again\n", r.Transient)
			return b.String()
		}
		b.WriteString("All nodes consistent\n")
		return b.String()
	}
	for _, d := range r.Diffs {
		fmt.Fprintf(&b, "INCONSISTENT: %s differs from %s by %d keys (%d missing, %d extra, %d different)",
			d.Node, d.Reference, d.Keys(), d.Missing, d.Extra, d.Different)
		if len(d.Sample) > 0 {
			fmt.Fprintf(&b, "; e.g. %s", strings.Join(d.Sample, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// VerifyOptions tune VerifyReplication.
type VerifyOptions struct {
	// Tables to check; default the Cluster's tables.
	Tables []string
	// Nodes to check; default every node of Status holding a copy.
	Nodes []string
	// Rechecks is how many times keys found different are read again on
	// both nodes, RecheckDelay apart, before they count: each node's copy
	// is checksummed at a different instant, so writes in flight make
	// copies look different for a moment. Only keys that differ in the
	// first comparison and in every recheck are reported. 0 means the
	// default (2); a negative value reports the first comparison as is.
	Rechecks int
	// RecheckDelay is the pause before each recheck (default 300ms).
	RecheckDelay time.Duration
}

// Defaults of VerifyOptions.
const (
	DefaultRechecks     = 2
	DefaultRecheckDelay = 300 * time.Millisecond
)

// VerifyReplication checksums every node's local copy of each table and,
// where copies differ, finds by how many keys (drilling into the differing
// buckets only). The reference copy is the one most nodes agree on.
func (cl *Cluster) VerifyReplication(ctx context.Context, opts VerifyOptions) ([]ReplicationReport, error) {
	if opts.Rechecks == 0 {
		opts.Rechecks = DefaultRechecks
	}
	if opts.Rechecks < 0 {
		opts.Rechecks = 0
	}
	if opts.RecheckDelay <= 0 {
		opts.RecheckDelay = DefaultRecheckDelay
	}
	tables := opts.Tables
	if len(tables) == 0 {
		tables = cl.tables
	}
	var st *Status
	if len(opts.Nodes) == 0 {
		var err error
		if st, err = cl.Status(ctx); err != nil {
			return nil, err
		}
	}
	var out []ReplicationReport
	for _, tab := range tables {
		nodes := opts.Nodes
		if st != nil {
			nodes = nil
			for _, v := range st.Nodes {
				if !v.Reachable {
					nodes = append(nodes, v.Node)
					continue
				}
				for _, t := range v.Tables {
					if t.Name == tab && (t.Storage == "disc_copies" || t.Storage == "ram_copies") {
						nodes = append(nodes, v.Node)
					}
				}
			}
		}
		r, err := cl.verifyTable(ctx, tab, nodes, cl.bucketsFor(tableSize(st, tab)), opts)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (cl *Cluster) verifyTable(ctx context.Context, tab string, nodes []string, n int, opts VerifyOptions) (ReplicationReport, error) {
	r := ReplicationReport{Table: tab, Nodes: make([]NodeReplica, len(nodes))}
	sums := make([][]bucketSum, len(nodes))
	forEach(nodes, func(i int, node string) {
		r.Nodes[i].Node = node
		s, err := cl.bucketSums(ctx, node, tab, n)
		if err != nil {
			r.Nodes[i].Error = err.Error()
			return
		}
		sums[i] = s
		h := sha256.New()
		var buf [16]byte
		for _, b := range s {
			r.Nodes[i].Size += int64(b.Count)
			binary.BigEndian.PutUint64(buf[:], b.Count)
			binary.BigEndian.PutUint64(buf[8:], b.Sum)
			h.Write(buf[:])
		}
		r.Nodes[i].Checksum = hex.EncodeToString(h.Sum(nil)[:8])
	})
	if err := ctx.Err(); err != nil {
		return r, err
	}
	// Reference: the checksum most nodes share (ties: the first node).
	votes := map[string]int{}
	for _, n := range r.Nodes {
		if n.Error == "" {
			votes[n.Checksum]++
		}
	}
	ref := -1
	for i, n := range r.Nodes {
		if n.Error == "" && (ref < 0 || votes[n.Checksum] > votes[r.Nodes[ref].Checksum]) {
			ref = i
		}
	}
	if ref < 0 {
		return r, nil // nothing readable; Consistent stays false
	}
	r.Reference = r.Nodes[ref].Node
	r.Consistent = true
	for i, n := range r.Nodes {
		if n.Error != "" {
			r.Consistent = false
			continue
		}
		if n.Checksum == r.Nodes[ref].Checksum {
			continue
		}
		d, err := cl.diffNodes(ctx, tab, r.Nodes[ref].Node, n.Node, sums[ref], sums[i], len(sums[ref]), opts)
		if err != nil {
			return r, err
		}
		if d.Keys() == 0 {
			// The copies differed only while writes were in flight.
			r.Transient += d.Transient
			continue
		}
		r.Consistent = false
		r.Transient += d.Transient
		r.Diffs = append(r.Diffs, d)
	}
	return r, nil
}

// diffNodes compares two nodes' copies key by key within differing
// buckets, then reads the differing keys again on both nodes
// (opts.Rechecks times, opts.RecheckDelay apart) and keeps only the keys
// that differ every time.
func (cl *Cluster) diffNodes(ctx context.Context, tab, ref, node string, a, b []bucketSum, n int, opts VerifyOptions) (ReplicaDiff, error) {
	d := ReplicaDiff{Node: node, Reference: ref}
	idx := diffBuckets(a, b)
	var ka, kb map[string]keyInfo
	var aerr, berr error
	forEach([]string{ref, node}, func(i int, nd string) {
		if i == 0 {
			ka, aerr = cl.bucketKeys(ctx, nd, tab, n, idx)
		} else {
			kb, berr = cl.bucketKeys(ctx, nd, tab, n, idx)
		}
	})
	if err := errors.Join(aerr, berr); err != nil {
		return d, err
	}
	first := len(differing(ka, kb))
	for round := 0; round < opts.Rechecks; round++ {
		ids := differing(ka, kb)
		if len(ids) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(opts.RecheckDelay):
		}
		forEach([]string{ref, node}, func(i int, nd string) {
			if i == 0 {
				ka, aerr = cl.keyInfos(ctx, nd, tab, ids)
			} else {
				kb, berr = cl.keyInfos(ctx, nd, tab, ids)
			}
		})
		if err := errors.Join(aerr, berr); err != nil {
			return d, err
		}
	}
	var sample []string
	for id, x := range ka {
		y, ok := kb[id]
		switch {
		case !ok:
			d.Missing++
			sample = append(sample, id)
		case x.Digest != y.Digest:
			d.Different++
			sample = append(sample, id)
		}
	}
	for id := range kb {
		if _, ok := ka[id]; !ok {
			d.Extra++
			sample = append(sample, id)
		}
	}
	d.Transient = first - d.Keys()
	sort.Strings(sample)
	d.keys = slices.Clone(sample)
	if len(sample) > 5 {
		sample = sample[:5]
	}
	d.Sample = sample
	return d, nil
}
