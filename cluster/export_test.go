package cluster

import "context"

// SetBeforeReadRows makes a heal's read-changes call f between comparing
// the copies and reading the loser's rows (the window in which live
// traffic on the loser deletes rows the comparison wanted).
func SetBeforeReadRows(cl *Cluster, f func()) { cl.beforeReadRows = f }

// SetAfterStopLosers makes a heal's reload-losers call f once the losers'
// Mnesia is stopped, before any starts again; an error interrupts it.
func SetAfterStopLosers(cl *Cluster, f func() error) { cl.afterStopLosers = f }

// VerifyAndRepair runs the heal's verify step alone: verify every replica
// and repair those that differ.
func VerifyAndRepair(cl *Cluster, ctx context.Context, dir string) (string, []string, error) {
	var rep HealReport
	d, err := cl.verifyAndRepair(ctx, dir, &rep)
	return d, rep.Repaired, err
}
