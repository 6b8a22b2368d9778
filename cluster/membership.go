package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
)

// MembershipOptions tune AddNode and RemoveNode.
type MembershipOptions struct {
	Journal *journal.Journal // required unless DryRun
	Reason  string
	DryRun  bool
	// WaitTimeout bounds waiting for table copies to load (default 120s).
	WaitTimeout time.Duration
}

// MembershipReport is what AddNode or RemoveNode did (or would do).
type MembershipReport struct {
	Node   string              `json:"node"`
	DryRun bool                `json:"dry_run"`
	Plan   []string            `json:"plan"`
	Done   []string            `json:"done,omitempty"`
	Verify []ReplicationReport `json:"verify,omitempty"`
	Final  *Status             `json:"final,omitempty"`
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
	if jerr := opts.Journal.Update(seq, map[string]any{"node": node, "event": "done", "report": rep, "error": errText(err)}); err == nil {
		err = jerr
	}
	return rep, err
}

// join runs migctl_cluster:join on node.
func (cl *Cluster) join(ctx context.Context, node string, seeds []string, timeout time.Duration) (string, error) {
	t, err := cl.agent(ctx, node, "join", atomList(seeds), cl.tableAtoms(), int(timeout/time.Millisecond))
	if err != nil {
		return "", err
	}
	return stepsText(t[1]), nil
}

func stepsText(t etf.Term) string {
	l, _ := t.(etf.List)
	var parts []string
	for _, x := range l {
		if tt, ok := x.(etf.Tuple); ok && len(tt) == 2 {
			parts = append(parts, fmt.Sprintf("%s: %s", str(tt[0]), fmtTerm(tt[1])))
		}
	}
	return strings.Join(parts, ", ")
}

func fmtTerm(t etf.Term) string {
	if l, ok := t.(etf.List); ok {
		var p []string
		for _, x := range l {
			p = append(p, str(x))
		}
		return "[" + strings.Join(p, " ") + "]"
	}
	return str(t)
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
	t, err := cl.agent(ctx, stay, "del_copies", etf.Atom(node), cl.tableAtoms())
	if err != nil {
		return err
	}
	rep.Done = append(rep.Done, stepsText(t[1]))
	if v, err := cl.c.Call(ctx, node, "mnesia", "system_info", etf.Atom("is_running")); err == nil && v != etf.Atom("no") {
		if _, err := cl.agent(ctx, node, "stop_mnesia"); err != nil {
			return err
		}
		rep.Done = append(rep.Done, "mnesia stopped on "+node)
	} else if err != nil {
		rep.Done = append(rep.Done, fmt.Sprintf("%s unreachable (%v); removing it from the schema anyway", node, err))
	}
	// The others learn that Mnesia stopped there asynchronously
	// (mnesia_down): retry briefly while they still list it as running.
	for deadline := time.Now().Add(10 * time.Second); ; {
		t, err = cl.agent(ctx, stay, "del_schema", etf.Atom(node))
		if err == nil || !strings.Contains(err.Error(), "node_still_running_mnesia") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	rep.Done = append(rep.Done, stepsText(t[1]))
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
