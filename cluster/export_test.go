package cluster

// SetBeforeReadRows makes a heal's read-changes call f between comparing
// the copies and reading the loser's rows (the window in which live
// traffic on the loser deletes rows the comparison wanted).
func SetBeforeReadRows(cl *Cluster, f func()) { cl.beforeReadRows = f }
