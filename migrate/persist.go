package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/erlmcp/migctl/backends"
)

// PersistOptions tune VerifyPersistence.
type PersistOptions struct {
	// Node is the node to restart (default: the first node).
	Node string
	// Store is the DETS store to compare (default: erlmcp's DETS table as
	// the application has it open).
	Store backends.Spec
	// Restart restarts the node (the CLI runs --restart-cmd through sh).
	Restart func(ctx context.Context) error
	// Wait bounds the wait for the node and its store after the restart
	// (default 60 s).
	Wait   time.Duration
	Reason string
}

// Snapshot is a store's count and content checksum.
type Snapshot struct {
	Count int64  `json:"count"`
	Sum   uint64 `json:"checksum"`
}

// PersistReport is VerifyPersistence's answer.
type PersistReport struct {
	Node     string   `json:"node"`
	Store    string   `json:"store"`
	Before   Snapshot `json:"before"`
	After    Snapshot `json:"after"`
	Restored bool     `json:"restored"`
	Seconds  float64  `json:"restart_seconds"`
	Seq      uint64   `json:"seq,omitempty"`
}

// VerifyPersistence is the runbook's "restart the node, sessions restored"
// for ETS → DETS: it takes the DETS store's count and checksum (ids and
// values without last_accessed, which every fetch rewrites), restarts the
// node, waits for its store, and compares. Run it with the application
// quiet: sessions written or deleted meanwhile are differences too.
func (m *Migrator) VerifyPersistence(ctx context.Context, o PersistOptions) (*PersistReport, error) {
	if o.Node == "" {
		o.Node = m.nodes[0]
	}
	if o.Store.Kind == "" {
		o.Store = backends.DefaultSpec(backends.KindDETS)
	}
	if o.Wait <= 0 {
		o.Wait = 60 * time.Second
	}
	if o.Restart == nil {
		return nil, fmt.Errorf("verify persistence: no restart command (--restart-cmd)")
	}
	rep := &PersistReport{Node: o.Node, Store: o.Store.String()}
	snap := func() (Snapshot, error) {
		s, err := backends.Open(m.c, o.Node, o.Store)
		if err != nil {
			return Snapshot{}, err
		}
		defer s.Release(ctx)
		sums, err := s.Checksum(ctx, backends.FullRange, 1, backends.ChecksumOptions{})
		if err != nil {
			return Snapshot{}, err
		}
		var out Snapshot
		for _, b := range sums {
			out.Count += int64(b.Count)
			out.Sum += b.Sum
		}
		return out, nil
	}
	var err error
	if rep.Before, err = snap(); err != nil {
		return rep, err
	}
	t0 := time.Now()
	if err := o.Restart(ctx); err != nil {
		return rep, fmt.Errorf("restart: %w", err)
	}
	deadline := time.Now().Add(o.Wait)
	for {
		err = m.c.Connect(ctx, o.Node)
		if err == nil {
			if rep.After, err = snap(); err == nil {
				// The store answers only once the application is up again.
				if ns := m.nodeStatus(ctx, o.Node); ns.Backend != "" {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			return rep, fmt.Errorf("%w: %s did not come back within %s: %v", ErrNodeDown, o.Node, o.Wait, err)
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	rep.Restored = rep.Before == rep.After
	rep.Seq, _ = m.j.Append(KindPersistence, o.Reason, rep)
	if !rep.Restored {
		return rep, fmt.Errorf("%w: before the restart %d sessions (checksum %x), after %d (%x)", ErrVerify,
			rep.Before.Count, rep.Before.Sum, rep.After.Count, rep.After.Sum)
	}
	return rep, nil
}
