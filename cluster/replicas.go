package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/erlmcp/migctl/backends"
)

// repairReplicas makes replicas that VerifyReplication found different
// agree again, without restarting anything: for every differing key it
// reads the row on every node and each node's recorded last change of it,
// takes the state (row or absence) of the node whose last change is the
// latest among those whose copy that change accounts for (none: the
// reference copy, the one most nodes share), and writes it again, or
// deletes it, in one transaction on the
// reference node, which puts it on every replica. Each change applies only
// while the reference's row is still the one read (a client's write in
// between is newer and reaches every replica anyway). Every node's rows of
// those keys are backed up first.
//
// Why a heal needs it: writes a loser takes while its Mnesia restarts can
// reach some replicas and not others (the heal's verify saw it in about
// one run in eight with traffic left on).
func (cl *Cluster) repairReplicas(ctx context.Context, vr []ReplicationReport, dir string) ([]string, error) {
	var done []string
	for _, r := range vr {
		if r.Consistent || r.Reference == "" {
			continue
		}
		var ids []string
		for _, d := range r.Diffs {
			ids = append(ids, d.keys...)
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		if len(ids) == 0 {
			continue
		}
		var nodes []string
		for _, n := range r.Nodes {
			if n.Error != "" {
				return done, fmt.Errorf("replica of %s on %s unreadable: %s", r.Table, n.Node, n.Error)
			}
			nodes = append(nodes, n.Node)
		}
		rows := make([]map[string]backends.Row, len(nodes))
		infos := make([]map[string]keyInfo, len(nodes))
		chs := make([]map[string]change, len(nodes))
		errs := make([]error, len(nodes))
		forEach(nodes, func(i int, n string) {
			var rs []backends.Row
			rs, errs[i] = cl.getRows(ctx, n, r.Table, ids)
			rows[i] = map[string]backends.Row{}
			for _, x := range rs {
				rows[i][string(x.ID)] = x
			}
			if errs[i] == nil {
				infos[i], errs[i] = cl.keyInfos(ctx, n, r.Table, ids)
			}
			if errs[i] == nil {
				chs[i], _ = cl.changes(ctx, n, r.Table, ids) // no recorder: the reference decides
			}
		})
		if err := errors.Join(errs...); err != nil {
			return done, err
		}
		ref := slices.Index(nodes, r.Reference)
		byNode := map[string]map[string]change{}
		for i, n := range nodes {
			byNode[n] = chs[i]
		}
		for i, n := range nodes {
			var all []backends.Row
			for _, x := range rows[i] {
				all = append(all, x)
			}
			f := filepath.Join(dir, fmt.Sprintf("replica-before-repair-%s-%s.migx", r.Table, safeName(n)))
			if _, err := writeRows(f, n, r.Table, all); err != nil {
				return done, fmt.Errorf("back up %s's rows before the replica repair: %w", n, err)
			}
		}
		var writes []backends.Row
		var dels []string
		dec := map[string]Decision{}
		for _, id := range ids {
			// Among the copies their own record accounts for (the row
			// the node last wrote, or no row after a recorded
			// deletion), the latest change wins; no such copy: the one
			// most nodes share.
			// Each record is timed by its origin's (originTimed): a
			// replica stamps a change when it applies it, later than the
			// node that made it.
			var recs []change
			for i := range nodes {
				if c, ok := chs[i][id]; ok {
					recs = append(recs, c)
				}
			}
			best, at := ref, int64(-1)
			for i := range nodes {
				k, present := infos[i][id]
				if c, ok := chs[i][id]; ok && c.explains(k, present) {
					if t := originTimed(byNode, recs, id, c).us(); t > at {
						best, at = i, t
					}
				}
			}
			d := Decision{ID: id, Evidence: true}
			if k, ok := infos[ref][id]; ok {
				d.WinnerDigest = k.Digest
			}
			dec[id] = d
			if row, ok := rows[best][id]; ok {
				writes = append(writes, row)
			} else {
				dels = append(dels, id)
			}
		}
		res, err := cl.merge(ctx, r.Reference, r.Table, writes, dels, 0, dec)
		if err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("%s: %d keys on %v rewritten from the replica with the latest recorded change (%d written, %d deleted, %d changed meanwhile)",
			r.Table, len(ids), nodes, res.Written, res.Deleted, res.Skipped+res.Kept))
	}
	return done, nil
}

// verifyAndRepair verifies every replica; copies that differ are repaired
// (repairReplicas) and verified again, a few rounds: writes made while a
// reloaded loser was rejoining can still be landing on some replicas when
// the first repair runs (each round repairs only what it found).
func (cl *Cluster) verifyAndRepair(ctx context.Context, dir string, rep *HealReport) (string, error) {
	if err := cl.waitReplicating(ctx, 10*time.Second); err != nil {
		return "", err
	}
	const rounds = 5
	var found, done []string
	for round := 0; ; round++ {
		vr, err := cl.VerifyReplication(ctx, VerifyOptions{})
		if err != nil {
			return "", err
		}
		rep.Verify = vr
		if allConsistent(vr) {
			if round == 0 {
				return "healthy, all replicas consistent", nil
			}
			return fmt.Sprintf("healthy, all replicas consistent after %d repair round(s) of replicas that differed (%s): %s",
				round, strings.Join(found, "; "), strings.Join(done, "; ")), nil
		}
		var now []string
		for _, r := range vr {
			if !r.Consistent {
				now = append(now, strings.TrimSpace(r.Text()))
			}
		}
		if round == rounds {
			return "", fmt.Errorf("%w: %s (after %d repair rounds: %s)", ErrUnhealed, strings.Join(now, "; "), rounds, strings.Join(done, "; "))
		}
		cl.log.Warn("heal: replicas differ after the reload; repairing", "round", round+1, "report", strings.Join(now, "; "))
		found = append(found, now...)
		d, err := cl.repairReplicas(ctx, vr, dir)
		done = append(done, d...)
		rep.Repaired = append(rep.Repaired, d...)
		if err != nil {
			return "", fmt.Errorf("replica repair: %w (found: %s)", err, strings.Join(now, "; "))
		}
	}
}

// waitReplicating waits until every running node writes each session
// table to every node that holds a copy of it (its active replicas): a node
// that left one out would keep making copies differ, which no repair of
// rows can cure. It names the node and the replicas it skips.
func (cl *Cluster) waitReplicating(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		var bad []string
		for _, tab := range cl.tables {
			var holders []string
			for _, v := range st.Nodes {
				for _, t := range v.Tables {
					if t.Name == tab && v.MnesiaRunning() && (t.Storage == "disc_copies" || t.Storage == "ram_copies") {
						holders = append(holders, v.Node)
					}
				}
			}
			for _, v := range st.Nodes {
				for _, t := range v.Tables {
					if t.Name != tab || !v.MnesiaRunning() {
						continue
					}
					var skipped []string
					for _, h := range holders {
						if !contains(t.ActiveReplicas, h) {
							skipped = append(skipped, h)
						}
					}
					if len(skipped) > 0 {
						bad = append(bad, fmt.Sprintf("%s writes %s without %v", v.Node, tab, skipped))
					}
				}
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s (restart Mnesia on the node that leaves replicas out: `migctl cluster resync NODE`)", ErrUnhealed, strings.Join(bad, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func allConsistent(vr []ReplicationReport) bool {
	for _, r := range vr {
		if !r.Consistent {
			return false
		}
	}
	return true
}
