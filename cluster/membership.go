package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// MembershipOptions tune AddNode, RemoveNode and ResyncNode.
type MembershipOptions struct {
	Journal *journal.Journal // required unless DryRun
	Reason  string
	DryRun  bool
	// WaitTimeout bounds waiting for table copies to load (default 120s).
	WaitTimeout time.Duration
	// BackupDir is where ResyncNode backs up the node's copy (required).
	BackupDir string
}

// MembershipReport is what AddNode or RemoveNode did (or would do).
type MembershipReport struct {
	Node   string              `json:"node"`
	DryRun bool                `json:"dry_run"`
	Plan   []string            `json:"plan"`
	Done   []string            `json:"done,omitempty"`
	Verify []ReplicationReport `json:"verify,omitempty"`
	Final  *Status             `json:"final,omitempty"`
	// Backups: ResyncNode's backup of the node's copy of each table.
	Backups []Backup `json:"backups,omitempty"`
}

// AddNode joins node to the cluster: Mnesia started there, the cluster's
// running nodes given as extra_db_nodes, the schema made disc_copies there,
// a disc copy of each session table added, and the wait until they are
// loaded; then the replicas are verified. Steps already done are skipped,
// so it can be rerun after a failure.
func (cl *Cluster) AddNode(ctx context.Context, node string, opts MembershipOptions) (*MembershipReport, error) {
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 120 * time.Second
	}
	if _, _, err := erl.SplitNode(node); err != nil {
		return nil, err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	var seeds []string
	for _, v := range st.Nodes {
		if v.Node != node && v.MnesiaRunning() {
			seeds = append(seeds, v.Node)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("add node: no node of the cluster runs Mnesia")
	}
	if st.Verdict == Partitioned {
		return nil, fmt.Errorf("add node: the cluster is partitioned (%v); heal it first", st.Islands)
	}
	if err := cl.c.Connect(ctx, node); err != nil {
		return nil, err
	}
	rep := &MembershipReport{Node: node, DryRun: opts.DryRun, Plan: []string{
		fmt.Sprintf("start Mnesia on %s if it is not running", node),
		fmt.Sprintf("mnesia:change_config(extra_db_nodes, %v) on %s", seeds, node),
		fmt.Sprintf("mnesia:change_table_copy_type(schema, %s, disc_copies)", node),
		fmt.Sprintf("mnesia:add_table_copy(T, %s, disc_copies) for T in %v", node, cl.tables),
		fmt.Sprintf("mnesia:wait_for_tables(%v) on %s", cl.tables, node),
		"verify replication of every copy",
	}}
	if opts.DryRun {
		return rep, nil
	}
	if opts.Journal == nil {
		return nil, errors.New("add node: a journal is required")
	}
	if err := bind(opts.Journal, st); err != nil {
		return nil, err
	}
	seq, err := opts.Journal.Append(KindAddNode, opts.Reason, map[string]any{"node": node, "event": "start", "seeds": seeds, "tables": cl.tables})
	if err != nil {
		return nil, err
	}
	done, err := cl.join(ctx, node, seeds, opts.WaitTimeout)
	rep.Done = append(rep.Done, done)
	if err == nil {
		cl.nodes = dedupe(append(cl.nodes, node))
	}
	return rep, cl.settle(ctx, opts.Journal, seq, rep, err)
}

// join runs migctl_cluster:join on node.
func (cl *Cluster) join(ctx context.Context, node string, seeds []string, timeout time.Duration) (string, error) {
	steps, err := cl.api().Join(ctx, node, seeds, cl.tables, int64(timeout/time.Millisecond))
	if err != nil {
		return "", err
	}
	return stepsText(steps), nil
}

// stepsText is the operator's line for the steps of a membership change:
// "What: outcome, ...", a list outcome as [a b].
func stepsText(steps []agentapi.MembershipStep) string {
	var parts []string
	for _, s := range steps {
		o := s.Outcome
		if o == "" {
			o = "[" + strings.Join(s.Names, " ") + "]"
		}
		parts = append(parts, fmt.Sprintf("%s: %s", s.What, o))
	}
	return strings.Join(parts, ", ")
}

// RemoveNode takes node out of the cluster: Mnesia stopped there, its copy
// of each session table dropped, then its schema copy (which removes it
// from db_nodes everywhere). The node's Erlang VM keeps running and its
// Mnesia directory is left as it was.
func (cl *Cluster) RemoveNode(ctx context.Context, node string, opts MembershipOptions) (*MembershipReport, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	var stay string
	member := false
	for _, v := range st.Nodes {
		if v.Node == node {
			member = true
			continue
		}
		if stay == "" && v.MnesiaRunning() {
			stay = v.Node
		}
	}
	if !member {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, node)
	}
	if stay == "" {
		return nil, errors.New("remove node: no other node runs Mnesia")
	}
	if st.Verdict == Partitioned {
		return nil, fmt.Errorf("remove node: the cluster is partitioned (%v); heal it first", st.Islands)
	}
	rep := &MembershipReport{Node: node, DryRun: opts.DryRun, Plan: []string{
		fmt.Sprintf("mnesia:del_table_copy(T, %s) for T in %v, on %s", node, cl.tables, stay),
		fmt.Sprintf("mnesia:stop() on %s", node),
		fmt.Sprintf("mnesia:del_table_copy(schema, %s) on %s", node, stay),
		"verify the remaining replicas",
	}}
	if opts.DryRun {
		return rep, nil
	}
	if opts.Journal == nil {
		return nil, errors.New("remove node: a journal is required")
	}
	if err := bind(opts.Journal, st); err != nil {
		return nil, err
	}
	seq, err := opts.Journal.Append(KindRemoveNode, opts.Reason, map[string]any{"node": node, "event": "start", "via": stay})
	if err != nil {
		return nil, err
	}
	err = cl.removeSteps(ctx, node, stay, rep)
	if err == nil {
		var keep []string
		for _, n := range cl.nodes {
			if n != node {
				keep = append(keep, n)
			}
		}
		cl.nodes = keep
		rep.Final, err = cl.Status(ctx)
	}
	if err == nil {
		rep.Verify, err = cl.VerifyReplication(ctx, VerifyOptions{})
	}
	if jerr := opts.Journal.Update(seq, map[string]any{"node": node, "event": "done", "report": rep, "error": errText(err)}); err == nil {
		err = jerr
	}
	return rep, err
}

func (cl *Cluster) removeSteps(ctx context.Context, node, stay string, rep *MembershipReport) error {
	// Table copies go first, while the node still runs Mnesia: Mnesia
	// refuses to drop a disc copy it cannot reach.
	steps, err := cl.api().DelCopies(ctx, stay, node, cl.tables)
	if err != nil {
		return err
	}
	rep.Done = append(rep.Done, stepsText(steps))
	running, err := cl.mnesia().IsRunning(ctx, node)
	switch {
	case errors.Is(err, agentapi.ErrReplyShape):
		return err
	case err != nil:
		rep.Done = append(rep.Done, fmt.Sprintf("%s unreachable (%v); removing it from the schema anyway", node, err))
	case running != "no":
		if err := cl.api().StopMnesia(ctx, node); err != nil {
			return err
		}
		rep.Done = append(rep.Done, "mnesia stopped on "+node)
	}
	// The others learn that Mnesia stopped there asynchronously
	// (mnesia_down): retry briefly while they still list it as running.
	for deadline := time.Now().Add(10 * time.Second); ; {
		steps, err = cl.api().DelSchema(ctx, stay, node)
		if err == nil || !strings.Contains(err.Error(), "node_still_running_mnesia") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	rep.Done = append(rep.Done, stepsText(steps))
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ResyncNode makes node's copy of the session tables the same as the other
// nodes' again: the repair for a replica that differs from the others while
// Mnesia itself reports nothing wrong (VerifyReplication names it; seen
// after writes reached some replicas and not others while a healed loser
// rejoined). The node's copy is backed up first (an export file per table;
// RestoreBackup puts rows back, if_newer by default), then Mnesia on the
// node is stopped with the other running nodes as its master nodes and
// started again, so its tables load from them (the Erlang VM keeps running;
// the application's writes on that node fail meanwhile: drain it), the
// master nodes are cleared, and the replicas are verified.
//
// Only for a healthy cluster (every node running Mnesia and replicating):
// a partitioned one needs a heal, which also keeps both sides' writes.
func (cl *Cluster) ResyncNode(ctx context.Context, node string, opts MembershipOptions) (*MembershipReport, error) {
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 120 * time.Second
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	member, stopped := false, false
	var from []string
	for _, v := range st.Nodes {
		if v.Node == node {
			member = true
			stopped = v.Error == "" && !v.MnesiaRunning()
		} else if v.MnesiaRunning() && v.Error == "" {
			from = append(from, v.Node)
		}
	}
	if !member {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, node)
	}
	// The node's own Mnesia stopped (a resync that failed half way, or an
	// operator's stop) while every other node runs: start it first, loading
	// from the others, and go on as for a healthy cluster.
	restart := stopped && st.Verdict == Degraded && len(from) == len(st.Nodes)-1
	if st.Verdict != Healthy && !restart {
		return nil, fmt.Errorf("resync: %w: %s (%s); resync needs every node running and replicating (a split needs `migctl cluster heal`)",
			ErrNotHealthy, st.Verdict, strings.Join(st.Problems, "; "))
	}
	if len(from) == 0 {
		return nil, errors.New("resync: no other node holds the tables")
	}
	rep := &MembershipReport{Node: node, DryRun: opts.DryRun}
	if restart {
		rep.Plan = append(rep.Plan, fmt.Sprintf("Mnesia is not running on %s: start it there (tables load from %v if it still has them as master nodes)", node, from))
	}
	rep.Plan = append(rep.Plan,
		fmt.Sprintf("back up %s's copy of %v to %s", node, cl.tables, opts.BackupDir),
		fmt.Sprintf("on %s: master nodes %v, stop Mnesia (the application's writes there fail until it is back: drain it)", node, from),
		fmt.Sprintf("on %s: start Mnesia, tables load from %v, clear the master nodes", node, from),
		"wait until healthy; verify replication of every copy")
	if opts.DryRun {
		return rep, nil
	}
	if opts.Journal == nil {
		return nil, errors.New("resync: a journal is required")
	}
	if opts.BackupDir == "" {
		return nil, errors.New("resync: a backup directory is required")
	}
	if err := bind(opts.Journal, st); err != nil {
		return nil, err
	}
	seq, err := opts.Journal.Append(KindResync, opts.Reason, map[string]any{"node": node, "event": "start", "from": from, "tables": cl.tables})
	if err != nil {
		return nil, err
	}
	if restart {
		if _, _, err = cl.api().FinishReload(ctx, node, cl.tables, int64(opts.WaitTimeout/time.Millisecond)); err == nil {
			rep.Done = append(rep.Done, "Mnesia started on "+node)
			_, err = cl.waitHealthy(ctx, 30*time.Second)
		}
	}
	if err == nil {
		err = cl.resyncSteps(ctx, node, from, opts, rep)
	}
	if err = cl.settle(ctx, opts.Journal, seq, rep, err); err != nil && len(rep.Backups) > 0 {
		err = fmt.Errorf("%w (backups: %s)", err, backupFiles(rep.Backups))
	}
	return rep, err
}

// settle ends AddNode and ResyncNode: unless err, it waits until the
// cluster is healthy and every replica agrees; either way it records the
// outcome in journal entry seq.
func (cl *Cluster) settle(ctx context.Context, j *journal.Journal, seq uint64, rep *MembershipReport, err error) error {
	if err == nil {
		rep.Final, err = cl.waitHealthy(ctx, 30*time.Second)
	}
	if err == nil {
		rep.Verify, err = cl.VerifyReplication(ctx, VerifyOptions{})
		for _, r := range rep.Verify {
			if err == nil && !r.Consistent {
				err = fmt.Errorf("%w: %s", ErrUnhealed, strings.TrimSpace(r.Text()))
			}
		}
	}
	if jerr := j.Update(seq, map[string]any{"node": rep.Node, "event": "done", "report": rep, "error": errText(err)}); err == nil {
		err = jerr
	}
	return err
}

func (cl *Cluster) resyncSteps(ctx context.Context, node string, from []string, opts MembershipOptions, rep *MembershipReport) error {
	dir := filepath.Join(opts.BackupDir, "resync-"+time.Now().UTC().Format("20060102T150405.000Z"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, tab := range cl.tables {
		b, err := cl.backup(ctx, node, tab, dir)
		if err != nil {
			return fmt.Errorf("backup %s of %s: %w", tab, node, err)
		}
		rep.Backups = append(rep.Backups, b)
		if _, err := opts.Journal.Append(KindResync, opts.Reason, map[string]any{"node": node, "backup": b}); err != nil {
			return err
		}
	}
	rep.Done = append(rep.Done, fmt.Sprintf("backed up to %s", dir))
	if err := cl.api().PrepareReload(ctx, node, from); err != nil {
		return err
	}
	rep.Done = append(rep.Done, fmt.Sprintf("Mnesia stopped on %s, master nodes %v", node, from))
	// Stopping Mnesia can make prevent_overlapping_partitions cut links;
	// every pair connected before the tables load.
	if _, err := cl.reconnect(ctx, dedupe(append([]string{node}, from...))); err != nil {
		return err
	}
	ms, _, err := cl.api().FinishReload(ctx, node, cl.tables, int64(opts.WaitTimeout/time.Millisecond))
	if err != nil {
		return err
	}
	rep.Done = append(rep.Done, fmt.Sprintf("%s reloaded from %v in %d ms", node, from, ms))
	return nil
}
