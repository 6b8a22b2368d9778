package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/backends/exportfile"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// Journal kinds written by this package.
const (
	KindHeal        = "cluster.heal"
	KindHealStep    = "cluster.heal.step"
	KindAddNode     = "cluster.add_node"
	KindRemoveNode  = "cluster.remove_node"
	KindResync      = "cluster.resync"
	KindRestore     = "cluster.restore_backup"
	stateHealBucket = "cluster.heal"
)

// ExecuteOptions tune Execute.
type ExecuteOptions struct {
	// Journal records every step (required unless DryRun).
	Journal *journal.Journal
	// Reason is the operator's reason, journaled.
	Reason string
	// BackupDir receives the losers' tables before anything changes; the
	// files stay until the operator removes them.
	BackupDir string
	// DryRun returns the steps without doing anything.
	DryRun bool
	// WaitTimeout bounds waiting for tables to load and the cluster to
	// converge (default 60s).
	WaitTimeout time.Duration
	// FenceTimeout bounds how long the losers' writers are held (default
	// 5 minutes): past it the fence lifts by itself, the heal notices
	// before the losers' Mnesia stops, and stops before anything is
	// discarded.
	FenceTimeout time.Duration
	// OutOfBand restarts these losing nodes another way (package
	// cluster/sshrun: over SSH, stop, move the Mnesia directory aside,
	// start) instead of restarting Mnesia in band; for nodes whose Mnesia
	// is wedged. They then rejoin from the winners.
	OutOfBand OutOfBand
	// OutOfBandNodes selects the losers OutOfBand applies to.
	OutOfBandNodes []string
	// StopAfter stops the heal after the named step (ErrStopped), for an
	// operator who wants to look before going on; Resume continues. It
	// must be one of HealSteps.
	StopAfter string
	// StepHook, when set, runs after each step has completed and its
	// state is journaled, with "heal:after:STEP"; an error stops the heal
	// there as a crash would (failpoints: MIGCTL_FAILPOINT).
	StepHook func(step string) error
}

// Backup is one backed-up table copy.
type Backup struct {
	Node   string `json:"node"`
	Table  string `json:"table"`
	File   string `json:"file"`
	Count  int64  `json:"count"`
	SHA256 string `json:"sha256"`
}

// StepResult is one journaled step of a heal.
type StepResult struct {
	Step     string        `json:"step"`
	Detail   string        `json:"detail"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// HealReport is what Execute did.
type HealReport struct {
	ID       string              `json:"id"`
	DryRun   bool                `json:"dry_run"`
	Winner   []string            `json:"winner"`
	Losers   []string            `json:"losers"`
	Steps    []StepResult        `json:"steps"`
	Backups  []Backup            `json:"backups"`
	Merged   []MergeResult       `json:"merged"`
	Verify   []ReplicationReport `json:"verify"`
	Final    *Status             `json:"final,omitempty"`
	Duration time.Duration       `json:"duration_ns"`
	Healed   bool                `json:"healed"`
	// LongestFence is how long the losers' writers were held, from the
	// fence to their Mnesia stopping (their clients waited at most that).
	LongestFence time.Duration `json:"longest_fence_ns,omitempty"`
	// Repaired: replicas that differed after the reload and were made to
	// agree again (see repairReplicas).
	Repaired []string `json:"repaired,omitempty"`
	changes  map[string][]backends.Row
	// fenced are the loser nodes whose writers this run holds (fence);
	// flagged those whose dirty writers were told to take locks.
	fenced, flagged []string
	fencedAt        time.Time
	// resumedReload: this run finishes a reload-losers an earlier run
	// began (finishInterruptedReload).
	resumedReload bool
	// beginReload records in the journal, before the first loser's Mnesia
	// is stopped, that the reload has begun.
	beginReload func() error
	// readMarks: each losing node's own clock (erlang:system_time, ms)
	// when the last read of the losers' changes began; nil: no read in
	// this run (e.g. a resume). Their times, not migctl's, because the
	// change records they are compared with are stamped by the nodes, and
	// migctl's host need not agree with theirs (see catchUp).
	readMarks map[string]int64
}

// healState is the journal's record of a heal in progress.
type healState struct {
	ID        string   `json:"id"`
	Done      []string `json:"done"`
	Backups   []Backup `json:"backups"`
	Plan      *Plan    `json:"plan"`
	BackupDir string   `json:"backup_dir"`
	// ReloadBegun: reload-losers began (and may have stopped losers'
	// Mnesia) in some run of this heal. Saved before the step runs.
	ReloadBegun bool `json:"reload_begun,omitempty"`
}

// healStep is one step of a heal: its name (what --stop-after and the
// journal use), what it will do (the dry run), and what it does.
type healStep struct {
	Name string
	Plan func(cl *Cluster, p *Plan, opts ExecuteOptions) string
	Run  func(cl *Cluster, ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error)
}

// healSteps are the steps of a heal, in order.
//
// The merge comes before the losers reload, and the fence before the merge:
// from their last read until their Mnesia stops, the losers' writers wait
// on a table lock, so every write a loser acknowledged is in the changes
// merged into the winners, and no deletion made in the healed cluster can
// be undone by a merge that comes after it.
var healSteps = []healStep{
	{"check", planCheck, (*Cluster).stepCheck},
	{"backup", planBackup, (*Cluster).stepBackup},
	{"read-changes", planReadChanges, func(cl *Cluster, ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
		// Compare again, with the plan's winner and split time: the
		// losers kept taking writes while the operator read the plan
		// and while the backup ran, and those must be carried over too.
		return cl.readChanges(ctx, p, opts, rep)
	}},
	{"reconnect", func(*Cluster, *Plan, ExecuteOptions) string { return "connect every pair of nodes explicitly" },
		func(cl *Cluster, ctx context.Context, p *Plan, _ ExecuteOptions, _ *HealReport) (string, error) {
			return cl.reconnect(ctx, reachableNodes(p.Islands))
		}},
	{"fence", planFence, (*Cluster).fence},
	{"merge", planMerge, (*Cluster).stepMerge},
	{"reload-losers", planReload, (*Cluster).reloadLosers},
	{"converge", func(*Cluster, *Plan, ExecuteOptions) string {
		return "wait until every node lists every other in running_db_nodes"
	}, func(cl *Cluster, ctx context.Context, _ *Plan, opts ExecuteOptions, _ *HealReport) (string, error) {
		st, err := cl.waitHealthy(ctx, opts.WaitTimeout)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("islands %v", st.Islands), nil
	}},
	{"verify", func(*Cluster, *Plan, ExecuteOptions) string {
		return "verify running_db_nodes agree and every replica is identical; repair replicas that differ from the one with the latest recorded change"
	}, (*Cluster).stepVerify},
}

// HealSteps are the names of a heal's steps, in order (for --stop-after).
func HealSteps() []string {
	out := make([]string, len(healSteps))
	for i, s := range healSteps {
		out[i] = s.Name
	}
	return out
}

// ErrUnknownStep: a step name that is not one of HealSteps.
var ErrUnknownStep = errors.New("unknown heal step")

func checkStep(name string) error {
	if name == "" || slices.Contains(HealSteps(), name) {
		return nil
	}
	return fmt.Errorf("%w %q (steps: %s)", ErrUnknownStep, name, strings.Join(HealSteps(), ", "))
}

// ErrStopped: the heal stopped after ExecuteOptions.StopAfter; Resume
// continues it.
var ErrStopped = errors.New("heal stopped on request")

// Execute carries out a plan (see the package documentation). The
// cluster must still be split the way the plan saw it.
func (cl *Cluster) Execute(ctx context.Context, p *Plan, opts ExecuteOptions) (*HealReport, error) {
	id := "heal-" + time.Now().UTC().Format("20060102T150405.000Z")
	if opts.DryRun {
		rep := &HealReport{ID: id, DryRun: true, Winner: p.WinnerNodes(), Losers: p.LoserNodes()}
		for _, s := range healSteps {
			rep.Steps = append(rep.Steps, StepResult{Step: s.Name, Detail: s.Plan(cl, p, opts)})
		}
		return rep, nil
	}
	if err := checkStep(opts.StopAfter); err != nil {
		return nil, err
	}
	if opts.Journal == nil {
		return nil, errors.New("heal: a journal is required")
	}
	if opts.BackupDir == "" {
		return nil, errors.New("heal: a backup directory is required")
	}
	for _, is := range p.Islands {
		if is.Unreachable && (opts.OutOfBand == nil || !contains(opts.OutOfBandNodes, is.Nodes[0])) {
			return nil, fmt.Errorf("heal: %s cannot be read and is not restarted out of band; give it an SSH configuration", is.Nodes[0])
		}
	}
	if err := bind(opts.Journal, p.Status); err != nil {
		return nil, err
	}
	if _, err := opts.Journal.Append(KindHeal, opts.Reason, map[string]any{"id": id, "event": "start", "plan": p}); err != nil {
		return nil, err
	}
	// The heal works on a copy: read-changes refreshes its decisions.
	cp, err := clonePlan(p)
	if err != nil {
		return nil, err
	}
	return cl.run(ctx, healState{ID: id, Plan: cp, BackupDir: opts.BackupDir}, opts)
}

// Resume continues a heal that stopped (a failed step, a crash of migctl,
// or StopAfter) from the first step it had not completed, with the plan and
// backups the journal kept. The losers' changes are read back from the
// changes file the heal wrote, so nothing depends on migctl's memory.
func (cl *Cluster) Resume(ctx context.Context, id string, opts ExecuteOptions) (*HealReport, error) {
	if opts.Journal == nil {
		return nil, errors.New("resume: a journal is required")
	}
	var st healState
	ok, err := opts.Journal.GetState(stateHealBucket, id, &st)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("resume: no heal %q in %s", id, opts.Journal.Path())
	}
	if len(st.Done) == len(healSteps) {
		return nil, fmt.Errorf("resume: heal %s already completed", id)
	}
	if err := checkStep(opts.StopAfter); err != nil {
		return nil, err
	}
	if opts.DryRun {
		rep := &HealReport{ID: id, DryRun: true, Winner: st.Plan.WinnerNodes(), Losers: st.Plan.LoserNodes()}
		for _, s := range resumeSteps(st.Done, st.ReloadBegun) {
			rep.Steps = append(rep.Steps, StepResult{Step: s, Detail: "to do"})
		}
		return rep, nil
	}
	if _, err := opts.Journal.Append(KindHeal, opts.Reason, map[string]any{"id": id, "event": "resume", "done": st.Done}); err != nil {
		return nil, err
	}
	st.Done = resumeDone(st.Done, st.ReloadBegun)
	return cl.run(ctx, st, opts)
}

// resumeDone is what a resumed heal counts as done. Until the losers have
// reloaded, it checks again that the cluster is still split as the plan
// saw it, and fences, reads and merges again: a fence does not outlive the
// run that took it, the losers may have taken writes since, and merging
// again applies nothing twice (with evidence, keys already merged no
// longer differ, and every change applies only while the winner's row is
// the one the decision saw). Once reload-losers has begun, losers may
// have no Mnesia running: the islands are no longer those of the plan and
// every loser the run stopped had its changes merged, so the resume goes
// on with the reload (finishInterruptedReload).
func resumeDone(done []string, reloadBegun bool) []string {
	if slices.Contains(done, "reload-losers") || reloadBegun {
		return done
	}
	return slices.DeleteFunc(slices.Clone(done), func(s string) bool { return s == "check" || s == "fence" || s == "merge" })
}

// resumeSteps are the steps a resume of a heal with done steps runs.
func resumeSteps(done []string, reloadBegun bool) []string {
	d := resumeDone(done, reloadBegun)
	var out []string
	for _, s := range HealSteps() {
		if !slices.Contains(d, s) {
			out = append(out, s)
		}
	}
	return out
}

func (cl *Cluster) run(ctx context.Context, state healState, opts ExecuteOptions) (*HealReport, error) {
	t0 := time.Now()
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 60 * time.Second
	}
	if opts.FenceTimeout <= 0 {
		opts.FenceTimeout = 5 * time.Minute
	}
	opts.BackupDir = state.BackupDir
	p := state.Plan
	rep := &HealReport{ID: state.ID, Winner: p.WinnerNodes(), Losers: p.LoserNodes(),
		Backups: state.Backups, changes: map[string][]backends.Row{}}
	save := func() error { return opts.Journal.PutState(stateHealBucket, rep.ID, state) }
	if err := save(); err != nil {
		return nil, err
	}
	for _, step := range healSteps {
		s := step.Name
		if slices.Contains(state.Done, s) {
			if s == "read-changes" {
				if err := cl.loadChanges(p, opts.BackupDir, rep); err != nil {
					return rep, fmt.Errorf("resume %s: %w", rep.ID, err)
				}
			}
			rep.Steps = append(rep.Steps, StepResult{Step: s, Detail: "done before"})
			continue
		}
		if s == "reload-losers" {
			rep.resumedReload = state.ReloadBegun
			rep.beginReload = func() error {
				if state.ReloadBegun {
					return nil
				}
				state.ReloadBegun = true
				return save()
			}
		}
		st := time.Now()
		detail, err := step.Run(cl, ctx, p, opts, rep)
		if errors.Is(err, erl.ErrNodeDown) && s != "reload-losers" && ctx.Err() == nil {
			// A connection to a node dropped during the step (a busy
			// host, a network blip): every step but the reload can run
			// again as a whole. The fence is taken again (its holders
			// let go when migctl's connection to them went), the merge
			// applies nothing twice, and the reload still checks the
			// fence before anything is discarded.
			cl.log.Warn("heal: a node connection dropped during the step; running it again", "id", rep.ID, "step", s, "err", err)
			if s == "fence" {
				cl.unfence(rep)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			first := err
			detail, err = step.Run(cl, ctx, p, opts, rep)
			if err == nil {
				detail += fmt.Sprintf(" (run again after: %v)", first)
			}
		}
		r := StepResult{Step: s, Detail: detail, Duration: time.Since(st)}
		if err != nil {
			r.Error = err.Error()
		}
		rep.Steps = append(rep.Steps, r)
		cl.log.Info("heal step", "id", rep.ID, "step", s, "detail", detail, "took", r.Duration, "err", err)
		if _, jerr := opts.Journal.Append(KindHealStep, opts.Reason, map[string]any{"id": rep.ID, "result": r}); jerr != nil && err == nil {
			err = jerr
		}
		if s == "reload-losers" && err == nil {
			rep.fenced, rep.flagged = nil, nil // Mnesia restarted there: the fences and flags are gone
		}
		if err != nil {
			cl.unfence(rep)
			rep.Duration = time.Since(t0)
			if errors.Is(err, ErrLoserStopped) || errors.Is(err, ErrPlanStale) {
				// A resume would meet the same: the error says the way
				// on.
				return rep, fmt.Errorf("heal %s: step %s: %w", rep.ID, s, err)
			}
			return rep, fmt.Errorf("heal %s: step %s: %w (backups: %s; `migctl cluster heal --resume %s` continues, `migctl cluster restore-backup` restores)",
				rep.ID, s, err, backupFiles(rep.Backups), rep.ID)
		}
		state.Done = append(state.Done, s)
		state.Backups = rep.Backups
		if err := save(); err != nil {
			return rep, err
		}
		if opts.StepHook != nil {
			// After the step's state is saved: a process killed here is
			// what Resume must continue (tests SIGKILL migctl at each).
			if err := opts.StepHook("heal:after:" + s); err != nil {
				cl.unfence(rep)
				return rep, fmt.Errorf("heal %s: %w", rep.ID, err)
			}
		}
		if s == opts.StopAfter && s != healSteps[len(healSteps)-1].Name {
			// The operator looks before going on: do not keep the
			// losers' writers waiting meanwhile (Resume fences again).
			cl.unfence(rep)
			rep.Duration = time.Since(t0)
			return rep, fmt.Errorf("heal %s: %w after %s", rep.ID, ErrStopped, s)
		}
	}
	rep.Duration = time.Since(t0)
	rep.Healed = true
	_, err := opts.Journal.Append(KindHeal, opts.Reason, map[string]any{"id": rep.ID, "event": "done", "report": rep})
	return rep, err
}

func clonePlan(p *Plan) (*Plan, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var cp Plan
	return &cp, json.Unmarshal(b, &cp)
}

// refresh recomputes every loser's decisions against the winner with the
// plan's split time and buckets, in place, and says what changed.
func (cl *Cluster) refresh(ctx context.Context, p *Plan) (string, error) {
	w := p.Islands[p.Winner].Rep
	var parts []string
	for ti := range p.Tables {
		tp := &p.Tables[ti]
		for li := range tp.Losers {
			old := tp.Losers[li]
			l := p.Islands[old.Island].Rep
			var ws, ls []bucketSum
			var werr, lerr error
			forEach([]string{w, l}, func(i int, n string) {
				if i == 0 {
					ws, werr = cl.bucketSums(ctx, n, tp.Table, tp.Buckets)
				} else {
					ls, lerr = cl.bucketSums(ctx, n, tp.Table, tp.Buckets)
				}
			})
			if err := errors.Join(werr, lerr); err != nil {
				return "", err
			}
			window := time.Duration(old.SplitAt-old.deleteBefore()) * time.Millisecond
			lp, err := cl.compare(ctx, tp.Table, p.Islands[p.Winner], p.Islands[old.Island], ws, ls, time.UnixMilli(old.SplitAt), nil, window, old.deleteBefore())
			if err != nil {
				return "", err
			}
			lp.Island, lp.SplitAt, lp.SplitAtSource, lp.SplitAtDetail, lp.SplitAtData = old.Island, old.SplitAt, old.SplitAtSource, old.SplitAtDetail, old.SplitAtData
			tp.Losers[li] = lp
			before := map[string]string{}
			for _, d := range old.Decisions {
				before[d.ID] = d.Action
				if d.Overruled != nil {
					// Compared as its own comparison decided: the
					// losers are weighed again after this.
					before[d.ID] = d.Overruled.Was
				}
			}
			added, changed := 0, 0
			now := map[string]bool{}
			for _, d := range lp.Decisions {
				now[d.ID] = true
				a, ok := before[d.ID]
				switch {
				case !ok:
					added++
				case a != d.Action:
					changed++
				}
			}
			removed := 0
			for id := range before {
				if !now[id] {
					removed++
				}
			}
			parts = append(parts, fmt.Sprintf("%s island %d: %d decisions, %d new since the plan, %d changed, %d no longer needed",
				tp.Table, old.Island, len(lp.Decisions), added, changed, removed))
		}
	}
	return strings.Join(parts, "; "), nil
}

// settleGone re-decides the keys the loser no longer holds although the
// comparison wanted its rows (it deleted them in the meantime, as live
// traffic does): the loser's deletion now stands against the winner's row,
// under the same rule as any deletion of the split (it wins over a row the
// winner has not rewritten since the split; the merge re-checks that).
func (cl *Cluster) settleGone(ctx context.Context, p *Plan, lp *LoserPlan, ids []string, rows []backends.Row) (string, error) {
	have := map[string]bool{}
	for _, r := range rows {
		have[string(r.ID)] = true
	}
	var missing []string
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	tab := ""
	for _, tp := range p.Tables {
		for i := range tp.Losers {
			if &tp.Losers[i] == lp {
				tab = tp.Table
			}
		}
	}
	gone := map[string]bool{}
	for _, id := range missing {
		gone[id] = true
	}
	if lp.EvidenceComplete {
		// Decide those keys again from both sides' rows and records as
		// they are now: the loser's deletion against whatever the winner
		// did meanwhile, and the decisions carry what the merge must
		// find unchanged on the winner.
		sub, ok, err := cl.redecide(ctx, p, tab, lp, missing)
		if err != nil {
			return "", err
		}
		if ok {
			dels := 0
			for _, d := range sub.Decisions {
				if d.Action == ActDelete {
					dels++
				}
			}
			lp.Decisions = append(slices.DeleteFunc(lp.Decisions, func(d Decision) bool { return gone[d.ID] }), sub.Decisions...)
			sort.Slice(lp.Decisions, func(a, b int) bool { return lp.Decisions[a].ID < lp.Decisions[b].ID })
			return fmt.Sprintf("%s island %d: %d rows deleted on the loser since the comparison (%d now deletions, %d need nothing)",
				tab, lp.Island, len(missing), dels, len(missing)-dels), nil
		}
	}
	wk, err := cl.keyInfos(ctx, p.Islands[p.Winner].Rep, tab, missing)
	if err != nil {
		return "", err
	}
	dels, nothing := 0, 0
	var out []Decision
	for _, d := range lp.Decisions {
		if !gone[d.ID] {
			out = append(out, d)
			continue
		}
		w, ok := wk[d.ID]
		switch {
		case ok && lp.EvidenceComplete:
			// The loser's deletion is its last change, later than
			// anything the comparison saw on either side.
			dels++
			out = append(out, Decision{ID: d.ID, Action: ActDelete, WinnerLA: w.LastAccessed, Evidence: true, WinnerDigest: w.Digest,
				Why: "deleted on the loser after the comparison: the loser's deletion is the later change"})
		case ok && w.Written < lp.deleteBefore():
			dels++
			out = append(out, Decision{ID: d.ID, Action: ActDelete, WinnerLA: w.LastAccessed,
				Why: "deleted on the loser after the plan; the winner's row is older than the split"})
		case ok:
			nothing++
			out = append(out, Decision{ID: d.ID, Action: ActDrop, WinnerLA: w.LastAccessed,
				Why: "deleted on the loser after the plan; the winner wrote it during the split or just before, its write is kept"})
		default:
			nothing++
			out = append(out, Decision{ID: d.ID, Action: ActDrop,
				Why: "written then deleted on the loser during the split; absent on the winner too"})
		}
	}
	lp.Decisions = out
	return fmt.Sprintf("%s island %d: %d rows deleted on the loser since the comparison (%d now deletions, %d need nothing)",
		tab, lp.Island, len(missing), dels, nothing), nil
}

// changesFile is where read-changes keeps the rows a loser island wrote.
func changesFile(dir, id, tab string, island int) string {
	return filepath.Join(dir, id, fmt.Sprintf("changes-%s-island%d.migx", tab, island))
}

// loadChanges reads the changes files back (on resume).
func (cl *Cluster) loadChanges(p *Plan, dir string, rep *HealReport) error {
	for _, tp := range p.Tables {
		for _, lp := range tp.Losers {
			f := changesFile(dir, rep.ID, tp.Table, lp.Island)
			rows, err := readRows(f)
			if err != nil {
				return fmt.Errorf("changes file %s: %w", f, err)
			}
			rep.changes[fmt.Sprintf("%s/%d", tp.Table, lp.Island)] = rows
		}
	}
	return nil
}

func readRows(file string) ([]backends.Row, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if _, _, err := exportfile.Verify(fh); err != nil {
		return nil, err
	}
	if _, err := fh.Seek(0, 0); err != nil {
		return nil, err
	}
	r, err := exportfile.NewReader(fh)
	if err != nil {
		return nil, err
	}
	var out []backends.Row
	for {
		rows, err := r.Next(1000)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, x := range rows {
			out = append(out, backends.Row{ID: slices.Clone(x.ID), Blob: slices.Clone(x.Blob)})
		}
	}
}

func backupFiles(bs []Backup) string {
	if len(bs) == 0 {
		return "none made"
	}
	var f []string
	for _, b := range bs {
		f = append(f, b.File)
	}
	return strings.Join(f, ", ")
}

func planCheck(_ *Cluster, p *Plan, _ ExecuteOptions) string {
	return fmt.Sprintf("check the cluster is still split into %v", islandNodes(p.Islands))
}

func planBackup(cl *Cluster, p *Plan, opts ExecuteOptions) string {
	return fmt.Sprintf("export %v of %v to %s", cl.tables, p.LoserNodes(), opts.BackupDir)
}

func planReadChanges(_ *Cluster, p *Plan, _ ExecuteOptions) string {
	n := 0
	for _, t := range p.Tables {
		for _, l := range t.Losers {
			w, _, _ := l.Counts()
			n += w
		}
	}
	return fmt.Sprintf("read %d rows the losers wrote out of their local copies", n)
}

func planFence(cl *Cluster, p *Plan, _ ExecuteOptions) string {
	return fmt.Sprintf("on %v: hold writers (a write lock on %v until Mnesia stops there; dirty writers take locks), then read the losers' changes a last time", p.LoserNodes(), cl.tables)
}

func planReload(_ *Cluster, p *Plan, _ ExecuteOptions) string {
	return fmt.Sprintf("on %v: check the fence still holds, set master nodes %v, restart Mnesia (Erlang keeps running), wait for tables, clear master nodes", p.LoserNodes(), p.WinnerNodes())
}

func planMerge(_ *Cluster, p *Plan, _ ExecuteOptions) string {
	var parts []string
	for _, t := range p.Tables {
		for _, l := range t.Losers {
			w, d, x := l.Counts()
			part := fmt.Sprintf("%s: write %d, delete %d, drop %d", t.Table, w, d, x)
			if o := l.Overruled(); o > 0 {
				part += fmt.Sprintf(" (%d of the drops overruled by a later change on another losing island)", o)
			}
			parts = append(parts, part)
		}
	}
	return fmt.Sprintf("back up the winner's rows the merge touches, then merge the losers' changes into the winners %v: ", p.WinnerNodes()) + strings.Join(parts, "; ")
}

func (cl *Cluster) stepCheck(ctx context.Context, p *Plan, _ ExecuteOptions, _ *HealReport) (string, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return "", err
	}
	if err := p.Matches(st); err != nil {
		return "", err
	}
	return fmt.Sprintf("islands %v", st.Islands), nil
}

// Matches says whether the cluster is still split the way the plan saw
// it: the same islands (a plan is for those islands and that winner
// only), ErrPlanStale if not.
func (p *Plan) Matches(st *Status) error {
	if st.Verdict != Partitioned && !(st.Verdict == Degraded && len(reachableNodes(p.Islands)) < len(islandNodes(p.Islands))) {
		return fmt.Errorf("%w: the cluster is %s now", ErrPlanStale, st.Verdict)
	}
	if fmt.Sprint(st.Islands) != fmt.Sprint(p.Status.Islands) {
		return fmt.Errorf("%w: islands are %v, the plan saw %v", ErrPlanStale, st.Islands, p.Status.Islands)
	}
	return nil
}

func (cl *Cluster) stepBackup(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	dir := filepath.Join(opts.BackupDir, rep.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	skipped := ""
	for _, is := range p.Islands {
		if is.Unreachable {
			skipped += fmt.Sprintf("; %s unreachable: its copy is kept by the out-of-band move-aside", is.Nodes[0])
		}
	}
	for _, n := range p.LoserNodes() {
		if !contains(reachableNodes(p.Islands), n) {
			continue
		}
		for _, tab := range cl.tables {
			b, err := cl.backup(ctx, n, tab, dir)
			if err != nil {
				return "", fmt.Errorf("backup %s of %s: %w", tab, n, err)
			}
			rep.Backups = slices.DeleteFunc(rep.Backups, func(x Backup) bool { return x.File == b.File })
			rep.Backups = append(rep.Backups, b)
			if _, err := opts.Journal.Append(KindHealStep, opts.Reason, map[string]any{"id": rep.ID, "backup": b}); err != nil {
				return "", err
			}
		}
	}
	return fmt.Sprintf("%d files in %s%s", len(rep.Backups), dir, skipped), nil
}

func (cl *Cluster) stepMerge(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	target := p.Islands[p.Winner].Rep
	var parts []string
	for _, tp := range p.Tables {
		for _, lp := range tp.Losers {
			var dels []string
			for _, d := range lp.Decisions {
				if d.Action == ActDelete {
					dels = append(dels, d.ID)
				}
			}
			dec := map[string]Decision{}
			for _, d := range lp.Decisions {
				dec[d.ID] = d
			}
			// Only the rows of write decisions: a row read for a write
			// that was overruled since (another losing island changed
			// the key later) must not be merged.
			var rows []backends.Row
			for _, r := range rep.changes[fmt.Sprintf("%s/%d", tp.Table, lp.Island)] {
				if dec[string(r.ID)].Action == ActWrite {
					rows = append(rows, r)
				}
			}
			if err := cl.backupBeforeMerge(ctx, target, tp.Table, lp.Island, rows, dels, opts, rep); err != nil {
				return "", err
			}
			res, err := cl.merge(ctx, target, tp.Table, rows, dels, lp.deleteBefore(), dec)
			if err != nil {
				return "", err
			}
			rep.Merged = append(rep.Merged, res)
			part := fmt.Sprintf("%s: %d written, %d skipped (newer in cluster), %d deleted, %d kept (rewritten after split), %d changed on the winner during the heal (winner kept)",
				tp.Table, res.Written, res.Skipped, res.Deleted, res.Kept, res.WinnerChanged)
			if len(res.WinnerChangedIDs) > 0 {
				part += ": " + sampleIDs(res.WinnerChangedIDs, 5)
			}
			parts = append(parts, part)
		}
	}
	return strings.Join(parts, "; "), nil
}

// sampleIDs lists the first n ids, and how many more there are.
func sampleIDs(ids []string, n int) string {
	if len(ids) <= n {
		return strings.Join(ids, " ")
	}
	return fmt.Sprintf("%s ... %d more (-o json for all)", strings.Join(ids[:n], " "), len(ids)-n)
}

func (cl *Cluster) stepVerify(ctx context.Context, _ *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return "", err
	}
	rep.Final = st
	if st.Verdict != Healthy {
		return "", fmt.Errorf("%w: verdict %s: %v", ErrUnhealed, st.Verdict, st.Problems)
	}
	return cl.verifyAndRepair(ctx, filepath.Join(opts.BackupDir, rep.ID), rep)
}

// readChanges compares every loser with the winner again and reads the
// rows the losers wrote out of their own copies, into rep and the changes
// files.
func (cl *Cluster) readChanges(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	marks, skew, err := cl.clockMarks(ctx, p)
	if err != nil {
		return "", err
	}
	refreshed, err := cl.refresh(ctx, p)
	if err != nil {
		return "", err
	}
	n := 0
	var gone []string
	for ti, tp := range p.Tables {
		for li, lp := range tp.Losers {
			var ids []string
			for _, d := range lp.Decisions {
				if d.Action == ActWrite {
					ids = append(ids, d.ID)
				}
			}
			if cl.beforeReadRows != nil {
				cl.beforeReadRows()
			}
			rows, err := cl.getRows(ctx, p.Islands[lp.Island].Rep, tp.Table, ids)
			if err != nil {
				return "", err
			}
			if len(rows) != len(ids) {
				// The losing side keeps taking traffic: it deleted rows
				// since the comparison. Decide those keys again from
				// what each side holds now instead of giving up.
				note, err := cl.settleGone(ctx, p, &p.Tables[ti].Losers[li], ids, rows)
				if err != nil {
					return "", err
				}
				gone = append(gone, note)
			}
			key := fmt.Sprintf("%s/%d", tp.Table, lp.Island)
			rep.changes[key] = rows
			n += len(rows)
			// Keep the changes on disc as well: the backups hold them
			// too, but this file is exactly what the merge applies.
			f := changesFile(opts.BackupDir, rep.ID, tp.Table, lp.Island)
			if _, err := writeRows(f, p.Islands[lp.Island].Rep, tp.Table, rows); err != nil {
				return "", err
			}
		}
	}
	detail := fmt.Sprintf("%d rows (%s)", n, refreshed)
	if skew != "" {
		detail += "; " + skew
	}
	if len(gone) > 0 {
		detail += "; " + strings.Join(gone, "; ")
	}
	// Each loser was compared with the winner alone: weigh the losers'
	// changes of the same keys against each other (rows of a decision
	// overruled here stay in the changes file; the merge writes only the
	// rows of write decisions).
	if note, err := cl.weighAll(ctx, p); err != nil {
		return "", err
	} else if note != "" {
		detail += "; " + note
	}
	rep.readMarks = marks
	return detail, nil
}

// clockMarks reads the clock of every node of every losing island, before
// their changes are read: catchUp later asks each of them what changed
// since its own mark. skew says, for the
// operator, which nodes' clocks are far from migctl's (harmless to the
// heal, which never compares the two; worth knowing when reading logs).
func (cl *Cluster) clockMarks(ctx context.Context, p *Plan) (map[string]int64, string, error) {
	var nodes []string
	for _, tp := range p.Tables {
		for _, lp := range tp.Losers {
			nodes = append(nodes, p.Islands[lp.Island].Nodes...)
		}
	}
	nodes = dedupe(nodes)
	ms := make([]int64, len(nodes))
	errs := make([]error, len(nodes))
	before := time.Now()
	forEach(nodes, func(i int, n string) {
		ms[i], errs[i] = cl.api().Clock(ctx, n)
	})
	after := time.Now()
	if err := errors.Join(errs...); err != nil {
		return nil, "", fmt.Errorf("read the losers' clocks: %w", err)
	}
	marks := make(map[string]int64, len(nodes))
	var far []string
	for i, n := range nodes {
		marks[n] = ms[i]
		// A node's reading lies between migctl's before and after.
		switch lo, hi := before.UnixMilli(), after.UnixMilli(); {
		case ms[i] < lo-clockNote:
			far = append(far, fmt.Sprintf("%s %v behind", n, time.Duration(lo-ms[i])*time.Millisecond))
		case ms[i] > hi+clockNote:
			far = append(far, fmt.Sprintf("%s %v ahead", n, time.Duration(ms[i]-hi)*time.Millisecond))
		}
	}
	if len(far) == 0 {
		return marks, "", nil
	}
	return marks, "clocks differ from migctl's: " + strings.Join(far, ", ") + " (each node's changes are read by its own clock)", nil
}

// clockNote: how far a node's clock may be from migctl's before the heal
// mentions it.
const clockNote = 250

// catchUpMargin is taken off each node's mark when asking what changed
// since: a change is stamped when the node's recorder handles it, which can
// only be later than the change, so no margin is needed for correctness;
// a few more keys re-decided cost little and cover a clock that was
// stepped back on the node between the mark and the change (Erlang's
// system time does not follow a step in its default mode, but a node run
// with +C multi_time_warp does).
const catchUpMargin = 1000

// fence holds the writers of every reachable losing island and then reads
// the losers' changes a last time. On every losing node it first tells
// dirty writers (the hybrid backend's dual-write phases) to use
// transactions (migctl_cluster:fence_flag/1), then takes a write lock on
// the session tables through one node of each island
// (migctl_cluster:fence/3; Mnesia locks a table on every replica of the
// island, so the writers of all its nodes wait). The locks last until the
// losers' Mnesia stops (reload-losers, which checks they are still held
// first), unfence, migctl's node going away, or FenceTimeout, whichever
// is first; erlmcp's transactions wait meanwhile and, when Mnesia stops
// under them, abort unacknowledged.
//
// A loser whose Mnesia is not running here was stopped by someone else:
// the heal stops Mnesia on losers only later, in reload-losers, and a
// resume begins by checking the islands again, which a loser without
// Mnesia is not part of. What it acknowledged between read-changes and
// its stop is only in its Mnesia directory, which the reload would replace
// with the winners' copy, so the heal refuses (ErrLoserStopped) before
// anything is merged or discarded.
func (cl *Cluster) fence(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	var held []string
	losers := reachableLosers(p)
	errs := make([]error, len(losers))
	// For FenceTimeout by each node's own clock: the flag is compared with
	// it by the node's writers, and migctl's clock need not agree.
	forEach(losers, func(i int, n string) {
		errs[i] = cl.api().FenceFlag(ctx, n, opts.FenceTimeout)
	})
	rep.flagged = losers
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("fence: %w", err)
	}
	for i, is := range p.Islands {
		if i == p.Winner || is.Unreachable {
			continue
		}
		running, err := cl.api().Fence(ctx, is.Rep, cl.tables, cl.c.Name(), opts.FenceTimeout.Milliseconds())
		if err != nil {
			return "", fmt.Errorf("fence %s: %w", is.Rep, err)
		}
		if !running {
			return "", loserStopped(is.Rep, rep)
		}
		rep.fenced = append(rep.fenced, is.Rep)
		held = append(held, is.Rep)
	}
	rep.fencedAt = time.Now()
	if len(held) == 0 {
		return "no reachable loser", nil
	}
	// The last read under the fence: only what the losers changed since
	// the previous read when their records say so (a few keys, so the
	// writers are held for as short a time as possible), else in full.
	detail, ok, err := cl.catchUp(ctx, p, opts, rep)
	if err == nil && !ok {
		detail, err = cl.readChanges(ctx, p, opts, rep)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("writers held on %v (every node of their islands; dirty writers on %v take locks); read again: %s", held, losers, detail), nil
}

// loserStopped is the refusal when node's Mnesia was found stopped at the
// fence, with the way on: what is where, and how to heal without losing it.
func loserStopped(node string, rep *HealReport) error {
	var files []string
	for _, b := range rep.Backups {
		if b.Node == node {
			files = append(files, b.File)
		}
	}
	return fmt.Errorf("%w: Mnesia is not running on %s, and this heal did not stop it: it stopped after the heal read its changes. "+
		"Nothing was merged or discarded. What %s acknowledged since the split is in its Mnesia directory (and, up to the backup step, in %v); "+
		"do not start Mnesia there while it is connected to the other nodes, which would load their copy over it. "+
		"Find out why it stopped (its log), then heal with a new plan that restarts it out of band, `migctl cluster heal --ssh-nodes %s` "+
		"(its Mnesia directory is moved aside and kept, not overwritten), then write its sessions back from the backup with "+
		"`migctl cluster restore-backup FILE` (only rows newer than the cluster's)", ErrLoserStopped, node, node, files, node)
}

// catchUp re-decides only the keys the losers changed since the previous
// read of their changes (each node's rep.readMarks, by its own clock, less
// catchUpMargin), from their change records
// (migctl_cluster:changed_since/2), and reads those rows;
// every other decision and row stands (the losers did not change them,
// and a change the winners made since is caught by the merge's
// conditions). ok is false when that cannot be known: no read before in
// this run, a comparison without complete evidence, or a loser whose
// records do not reach back that far; the caller then reads in full.
func (cl *Cluster) catchUp(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, bool, error) {
	if rep.readMarks == nil {
		return "", false, nil
	}
	type job struct {
		ti, li int
		ids    []string
	}
	var jobs []job
	for ti, tp := range p.Tables {
		for li, lp := range tp.Losers {
			if !lp.EvidenceComplete {
				return "", false, nil
			}
			seen := map[string]bool{}
			var ids []string
			for _, n := range p.Islands[lp.Island].Nodes {
				mark, ok := rep.readMarks[n]
				if !ok {
					return "", false, nil // not read last time: read in full
				}
				changed, known, err := cl.api().ChangedSince(ctx, n, tp.Table, mark-catchUpMargin)
				if err != nil {
					return "", false, err
				}
				if !known {
					return "", false, nil // the records do not reach back
				}
				for _, id := range changed {
					if !seen[id] {
						seen[id] = true
						ids = append(ids, id)
					}
				}
			}
			jobs = append(jobs, job{ti, li, ids})
		}
	}
	var parts []string
	n := 0
	for _, j := range jobs {
		tp := &p.Tables[j.ti]
		lp := &tp.Losers[j.li]
		l := p.Islands[lp.Island]
		key := fmt.Sprintf("%s/%d", tp.Table, lp.Island)
		rows := rep.changes[key]
		if len(j.ids) > 0 {
			sub, ok, err := cl.redecide(ctx, p, tp.Table, lp, j.ids)
			if err != nil || !ok {
				return "", false, err
			}
			changed := map[string]bool{}
			for _, id := range j.ids {
				changed[id] = true
			}
			lp.Decisions = append(slices.DeleteFunc(lp.Decisions, func(d Decision) bool { return changed[d.ID] }), sub.Decisions...)
			sort.Slice(lp.Decisions, func(a, b int) bool { return lp.Decisions[a].ID < lp.Decisions[b].ID })
			for _, x := range []struct{ dst, src *[]KeyChange }{
				{&lp.WrittenOnLoser, &sub.WrittenOnLoser}, {&lp.DeletedOnLoser, &sub.DeletedOnLoser},
				{&lp.WrittenOnWinner, &sub.WrittenOnWinner}, {&lp.DeletedOnWinner, &sub.DeletedOnWinner},
			} {
				*x.dst = append(slices.DeleteFunc(*x.dst, func(c KeyChange) bool { return changed[c.ID] }), *x.src...)
			}
			var want []string
			for _, d := range sub.Decisions {
				if d.Action == ActWrite {
					want = append(want, d.ID)
				}
			}
			fresh, err := cl.getRows(ctx, l.Rep, tp.Table, want)
			if err != nil {
				return "", false, err
			}
			rows = append(slices.DeleteFunc(slices.Clone(rows), func(r backends.Row) bool { return changed[string(r.ID)] }), fresh...)
			rep.changes[key] = rows
			if _, err := writeRows(changesFile(opts.BackupDir, rep.ID, tp.Table, lp.Island), l.Rep, tp.Table, rows); err != nil {
				return "", false, err
			}
		}
		n += len(rows)
		parts = append(parts, fmt.Sprintf("%s island %d: %d keys changed on the loser since the last read, re-decided from the change records (%d decisions)",
			tp.Table, lp.Island, len(j.ids), len(lp.Decisions)))
	}
	out := fmt.Sprintf("%d rows (%s)", n, strings.Join(parts, "; "))
	note, err := cl.weighAll(ctx, p)
	if err != nil {
		return "", false, err
	}
	if note != "" {
		out += "; " + note
	}
	return out, true, nil
}

// weighAll weighs the losing islands' decisions against each other in
// every table (weighLosers), and says what it overruled.
func (cl *Cluster) weighAll(ctx context.Context, p *Plan) (string, error) {
	var notes []string
	for ti := range p.Tables {
		note, err := cl.weighLosers(ctx, p, &p.Tables[ti])
		if err != nil {
			return "", err
		}
		if note != "" {
			notes = append(notes, note)
		}
	}
	return strings.Join(notes, "; "), nil
}

// redecide decides ids again from both sides' rows and change records as
// they are now, with lp's split time and keep window, into a plan of its
// own (for keys changed after the comparison). ok is false when the
// records no longer cover what the decisions need.
func (cl *Cluster) redecide(ctx context.Context, p *Plan, tab string, lp *LoserPlan, ids []string) (LoserPlan, bool, error) {
	w, l := p.Islands[p.Winner], p.Islands[lp.Island]
	sub := LoserPlan{Island: lp.Island, SplitAt: lp.SplitAt, KeepFrom: lp.KeepFrom}
	var wk, lk map[string]keyInfo
	var werr, lerr error
	forEach([]string{w.Rep, l.Rep}, func(i int, node string) {
		if i == 0 {
			wk, werr = cl.keyInfos(ctx, node, tab, ids)
		} else {
			lk, lerr = cl.keyInfos(ctx, node, tab, ids)
		}
	})
	if err := errors.Join(werr, lerr); err != nil {
		return sub, false, err
	}
	ev, err := cl.readEvidence(ctx, tab, w.Nodes, l.Nodes, w.Rep, ids)
	if err != nil {
		cl.log.Warn("heal: change records unreadable; reading in full", "err", err)
		return sub, false, nil
	}
	ev.Need = lp.deleteBefore() - 250
	if ok, _ := ev.complete(); !ok {
		return sub, false, nil
	}
	classifyEvidence(&sub, wk, lk, ev)
	return sub, true, nil
}

// reachableLosers are the losing nodes migctl can reach.
func reachableLosers(p *Plan) []string {
	var out []string
	for i, is := range p.Islands {
		if i != p.Winner && !is.Unreachable {
			out = append(out, is.Nodes...)
		}
	}
	return out
}

// unfence releases the fences this run holds (a step failed, or the
// operator stops the heal to look) and the dirty writers' flags.
func (cl *Cluster) unfence(rep *HealReport) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range rep.fenced {
		if err := cl.api().Unfence(ctx, n); err != nil {
			cl.log.Warn("heal: could not release the fence; it ends by itself when migctl exits or after the fence timeout", "node", n, "err", err)
		}
	}
	forEach(rep.flagged, func(_ int, n string) {
		if err := cl.api().FenceFlag(ctx, n, 0); err != nil {
			cl.log.Warn("heal: could not clear the dirty writers' fence flag; it ends by itself after the fence timeout", "node", n, "err", err)
		}
	})
	rep.fenced, rep.flagged = nil, nil
}

// backup exports node's local copy of tab into dir.
func (cl *Cluster) backup(ctx context.Context, node, tab, dir string) (Backup, error) {
	s, err := backends.Open(cl.c, node, backends.Spec{Kind: backends.KindMnesia, Table: tab})
	if err != nil {
		return Backup{}, err
	}
	// Written aside and renamed: a heal killed in the middle of its backup
	// leaves no torn file under the final name, and its resume (which runs
	// the backup again: the loser has not reloaded yet) replaces it.
	f := filepath.Join(dir, fmt.Sprintf("%s-%s.migx", safeName(node), tab))
	tmp := f + ".partial"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return Backup{}, err
	}
	tr, err := exportfile.Export(ctx, s, fh, 2000, nil)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return Backup{}, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return Backup{Node: node, Table: tab, File: f, Count: tr.Count, SHA256: tr.SHA256}, nil
}

// backupBeforeMerge keeps the winner's rows that the merge may overwrite or
// delete, so that the merge, the one step that changes the winners, can be
// undone (`migctl cluster restore-backup`); the losers' full backups never
// held a row only the winner had. A file left by an earlier attempt of
// this heal is kept as it is: that attempt may have merged part of the
// rows already, and the file has them as they were before any merge.
func (cl *Cluster) backupBeforeMerge(ctx context.Context, node, tab string, island int, rows []backends.Row, dels []string, opts ExecuteOptions, rep *HealReport) error {
	f := filepath.Join(opts.BackupDir, rep.ID, fmt.Sprintf("winner-before-merge-%s-island%d.migx", tab, island))
	b := Backup{Node: node, Table: tab, File: f}
	if fh, err := os.Open(f); err == nil {
		_, tr, verr := exportfile.Verify(fh)
		fh.Close()
		if verr != nil {
			return fmt.Errorf("backup of the winner's rows %s from an earlier attempt: %w", f, verr)
		}
		b.Count, b.SHA256 = tr.Count, tr.SHA256
	} else {
		ids := make([]string, 0, len(rows)+len(dels))
		for _, r := range rows {
			ids = append(ids, string(r.ID))
		}
		ids = append(ids, dels...)
		cur, err := cl.getRows(ctx, node, tab, ids)
		if err != nil {
			return fmt.Errorf("read the winner's rows before the merge: %w", err)
		}
		tr, err := writeRows(f, node, tab, cur)
		if err != nil {
			return fmt.Errorf("backup the winner's rows before the merge: %w", err)
		}
		b.Count, b.SHA256 = tr.Count, tr.SHA256
	}
	for _, x := range rep.Backups {
		if x.File == f {
			return nil
		}
	}
	rep.Backups = append(rep.Backups, b)
	_, err := opts.Journal.Append(KindHealStep, opts.Reason, map[string]any{"id": rep.ID, "backup": b})
	return err
}

func writeRows(file, node, tab string, rows []backends.Row) (exportfile.Trailer, error) {
	// Written aside and renamed: the fence reads the changes again and
	// replaces the file, and a crash must leave the old one or the new
	// one, never a torn file.
	tmp := file + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return exportfile.Trailer{}, err
	}
	var tr exportfile.Trailer
	w, err := exportfile.NewWriter(fh, exportfile.Header{Tool: "migctl cluster heal", Node: node,
		Store: backends.Spec{Kind: backends.KindMnesia, Table: tab}})
	if err == nil {
		err = w.Write(rows)
	}
	if err == nil {
		tr, err = w.Close()
	}
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return tr, err
	}
	if d, err := os.Open(filepath.Dir(file)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return tr, nil
}

func safeName(n string) string {
	return strings.NewReplacer("@", "_at_", "/", "_", ":", "_").Replace(n)
}

// reconnect connects every pair of nodes explicitly and waits until each
// sees all the others: after a split with prevent_overlapping_partitions,
// global may cut a connection again while others come up, so it retries.
func (cl *Cluster) reconnect(ctx context.Context, nodes []string) (string, error) {
	deadline := time.Now().Add(15 * time.Second)
	for attempt := 1; ; attempt++ {
		forEach(nodes, func(i int, n string) {
			_, _ = cl.api().Connect(ctx, n, nodes)
		})
		missing := cl.unconnected(ctx, nodes)
		if len(missing) == 0 {
			return fmt.Sprintf("%d nodes fully connected after %d round(s)", len(nodes), attempt), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("nodes still not connected: %v", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (cl *Cluster) unconnected(ctx context.Context, nodes []string) []string {
	missing := make([][]string, len(nodes))
	forEach(nodes, func(i int, n string) {
		seen, err := agentapi.Node{C: cl.c}.Connected(ctx, n)
		if err != nil {
			missing[i] = []string{n + ": " + err.Error()}
			return
		}
		for _, m := range nodes {
			if m != n && !contains(seen, m) {
				missing[i] = append(missing[i], n+"-"+m)
			}
		}
	})
	var out []string
	for _, m := range missing {
		out = append(out, m...)
	}
	return out
}

func (cl *Cluster) reloadLosers(ctx context.Context, p *Plan, opts ExecuteOptions, rep *HealReport) (string, error) {
	if rep.resumedReload {
		return cl.finishInterruptedReload(ctx, p, opts)
	}
	winners := p.WinnerNodes()
	losers := p.LoserNodes()
	var inBand, oob []string
	for _, n := range losers {
		if opts.OutOfBand != nil && contains(opts.OutOfBandNodes, n) {
			oob = append(oob, n)
		} else {
			inBand = append(inBand, n)
		}
	}
	// Stop Mnesia on every in-band loser before any starts again, so a
	// restarted loser cannot meet another loser still running the old data.
	// (An unreachable loser is out of band by construction: Execute checks.)
	// The nodes holding a fence stop last, each right after a check that
	// its lock is still held: while it is, no writer of its island can
	// commit, so nothing is acknowledged that the merge did not carry over.
	var holders, others []string
	for _, n := range inBand {
		if contains(rep.fenced, n) {
			holders = append(holders, n)
		} else {
			others = append(others, n)
		}
	}
	begin := func() error {
		if rep.beginReload == nil {
			return nil
		}
		return rep.beginReload()
	}
	// Every fence is checked before any loser stops: a loser is stopped
	// only while its island's writers are held, which is what lets a
	// resume reload a loser this run stopped without reading it again
	// (prepare_reload's mark; finishInterruptedReload).
	for _, n := range holders {
		if err := cl.checkFence(ctx, n); err != nil {
			return "", err
		}
	}
	if len(others) > 0 {
		if err := begin(); err != nil {
			return "", err
		}
	}
	errs := make([]error, len(others))
	forEach(others, func(i int, n string) {
		errs[i] = cl.api().PrepareReload(ctx, n, winners)
	})
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	for _, n := range holders {
		if err := cl.checkFence(ctx, n); err != nil {
			return "", err
		}
		if err := begin(); err != nil {
			return "", err
		}
		if err := cl.api().PrepareReload(ctx, n, winners); err != nil {
			return "", err
		}
	}
	if !rep.fencedAt.IsZero() {
		rep.LongestFence = max(rep.LongestFence, time.Since(rep.fencedAt))
	}
	if cl.afterStopLosers != nil {
		if err := cl.afterStopLosers(); err != nil {
			return "", err
		}
	}
	if len(oob) > 0 {
		if err := begin(); err != nil {
			return "", err
		}
	}
	detail, err := cl.rejoin(ctx, p, opts, oob, inBand, "")
	if err != nil {
		return "", err
	}
	return strings.Join(detail, "; "), nil
}

// rejoin restarts the out-of-band losers oob, reconnects every pair of
// nodes and has the in-band losers (their Mnesia stopped by
// prepare_reload, their master nodes the winners) start and load the
// winners' copy. note is said of each of those in the detail.
func (cl *Cluster) rejoin(ctx context.Context, p *Plan, opts ExecuteOptions, oob, inBand []string, note string) ([]string, error) {
	var detail []string
	for _, n := range oob {
		d, err := cl.restartOutOfBand(ctx, n, opts, p.WinnerNodes())
		if err != nil {
			return nil, err
		}
		detail = append(detail, d)
	}
	// Stopping Mnesia can make prevent_overlapping_partitions cut links
	// again; make sure every pair is connected before the loaders start.
	if _, err := cl.reconnect(ctx, islandNodes(p.Islands)); err != nil {
		return nil, err
	}
	// One loser at a time: each joins a cluster whose other members are
	// all running and loads its tables the way any restarting node does.
	// Started together under traffic, a loser that came up first kept
	// writing without the other in its replicas (seen with a 2-node losing
	// island: 86 keys missing on one of them, more after every repair).
	for _, n := range inBand {
		ms, how, err := cl.api().FinishReload(ctx, n, cl.tables, opts.WaitTimeout.Milliseconds())
		if err != nil {
			return nil, err
		}
		if how != "" {
			how = " (" + how + ")"
		}
		detail = append(detail, fmt.Sprintf("%s%s reloaded from %v in %d ms%s", n, note, p.WinnerNodes(), ms, how))
	}
	return detail, nil
}

// checkFence fails with ErrFenceLost unless node's fence still holds its
// lock on every session table.
func (cl *Cluster) checkFence(ctx context.Context, node string) error {
	held, err := cl.api().FenceHeld(ctx, node, cl.tables)
	if err != nil {
		return fmt.Errorf("check the fence on %s: %w", node, err)
	}
	if !held {
		return fmt.Errorf("%w on %s: its writers may have committed since the last read of its changes; nothing was discarded (resume fences and merges again)", ErrFenceLost, node)
	}
	return nil
}

// finishInterruptedReload is reload-losers in a resume of a heal whose
// reload had begun (a migctl killed, a connection lost): some losers may be
// stopped, some reloaded, some not reached. Each in-band loser is asked
// (migctl_cluster:reload_state/0):
//   - stopped by the heal (prepare_reload's mark): it was fenced until it
//     stopped, so every write it acknowledged was read and merged; its
//     master nodes are still the winners: started, it loads their copy;
//   - running among the winners: reloaded already;
//   - running its own copy: the interrupted run had not stopped it, and its
//     fence ended with that run, so it may have taken writes that were not
//     read: left alone, and the heal ends with ErrPlanStale (plan again);
//   - stopped without the mark (by someone else, or its Erlang node
//     restarted since): left alone, ErrLoserStopped.
//
// The losers that are safe are reloaded (one at a time, as in a whole
// run) before the others are reported, so the winners' side is whole
// again either way. Out-of-band losers not yet among the winners are
// restarted again (their Mnesia directory is moved aside, never
// overwritten).
func (cl *Cluster) finishInterruptedReload(ctx context.Context, p *Plan, opts ExecuteOptions) (string, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return "", err
	}
	withWinners := map[string]bool{}
	for _, is := range st.Islands {
		if contains(is, p.Islands[p.Winner].Rep) {
			for _, n := range is {
				withWinners[n] = true
			}
		}
	}
	var reload, oob, done, own, other []string
	for _, n := range p.LoserNodes() {
		switch {
		case withWinners[n]:
			done = append(done, n)
		case opts.OutOfBand != nil && contains(opts.OutOfBandNodes, n):
			oob = append(oob, n)
		default:
			state, err := cl.api().ReloadState(ctx, n)
			if err != nil {
				return "", fmt.Errorf("the state of %s's reload: %w", n, err)
			}
			switch state {
			case agentapi.ReloadStopped:
				reload = append(reload, n)
			case agentapi.ReloadRunning:
				own = append(own, n)
			default:
				other = append(other, n)
			}
		}
	}
	var detail []string
	if len(done) > 0 {
		detail = append(detail, fmt.Sprintf("%v reloaded by the interrupted run", done))
	}
	d, err := cl.rejoin(ctx, p, opts, oob, reload, " (stopped by the interrupted run)")
	if err != nil {
		return "", err
	}
	detail = append(detail, d...)
	var errs []error
	if len(own) > 0 {
		errs = append(errs, fmt.Errorf("%w: %v run their own copy again: the interrupted heal had not stopped them and their fence ended with it, so they may hold writes that were not read; plan again for them (migctl cluster heal --plan)",
			ErrPlanStale, own))
	}
	if len(other) > 0 {
		errs = append(errs, fmt.Errorf("%w: Mnesia is stopped on %v without this heal's mark (someone else stopped it, or its Erlang node restarted since the interrupted run): "+
			"if this heal stopped it, starting Mnesia there loads the winners' copy with the merged changes; if not, what it acknowledged since the heal read it is only in its Mnesia directory: "+
			"heal it out of band with a new plan (--ssh-nodes) to keep that directory",
			ErrLoserStopped, other))
	}
	if err := errors.Join(errs...); err != nil {
		if len(detail) > 0 {
			return "", fmt.Errorf("%s; then: %w", strings.Join(detail, "; "), err)
		}
		return "", err
	}
	return strings.Join(detail, "; "), nil
}

// waitHealthy polls Status until the verdict is healthy.
func (cl *Cluster) waitHealthy(ctx context.Context, timeout time.Duration) (*Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := cl.Status(ctx)
		if err == nil && st.Verdict == Healthy {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return st, fmt.Errorf("%w: still %s after %s: %v", ErrUnhealed, st.Verdict, timeout, st.Problems)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RestoreOptions tune RestoreBackup.
type RestoreOptions struct {
	// Mode decides what happens to sessions present in the table:
	// backends.IfNewer (default: a restored row replaces only an older
	// one), IfAbsent or Overwrite.
	Mode backends.PutMode
	// Table overrides the table recorded in the file.
	Table   string
	Journal *journal.Journal
	Reason  string
	DryRun  bool
}

// RestoreResult is what RestoreBackup did.
type RestoreResult struct {
	File   string             `json:"file"`
	Node   string             `json:"node"`
	Table  string             `json:"table"`
	Count  int64              `json:"count"`
	Result backends.PutResult `json:"result"`
	DryRun bool               `json:"dry_run"`
	SHA256 string             `json:"sha256"`
}

// RestoreBackup writes the sessions of a backup file made by a heal (or any
// export file) into the table through node. The file is verified whole
// before anything is written.
func (cl *Cluster) RestoreBackup(ctx context.Context, file, node string, opts RestoreOptions) (*RestoreResult, error) {
	if opts.Mode == "" {
		opts.Mode = backends.IfNewer
	}
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	h, tr, err := exportfile.Verify(fh)
	if err != nil {
		return nil, err
	}
	tab := opts.Table
	if tab == "" {
		tab = h.Store.Table
	}
	res := &RestoreResult{File: file, Node: node, Table: tab, Count: tr.Count, DryRun: opts.DryRun, SHA256: tr.SHA256}
	if opts.DryRun {
		return res, nil
	}
	if opts.Journal == nil {
		return nil, errors.New("restore: a journal is required")
	}
	if _, err := fh.Seek(0, 0); err != nil {
		return nil, err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	if err := bind(opts.Journal, st); err != nil {
		return nil, err
	}
	s, err := backends.Open(cl.c, node, backends.Spec{Kind: backends.KindMnesia, Table: tab})
	if err != nil {
		return nil, err
	}
	seq, err := opts.Journal.Append(KindRestore, opts.Reason, map[string]any{"event": "start", "file": file, "node": node, "table": tab, "mode": opts.Mode})
	if err != nil {
		return nil, err
	}
	res.Result, err = exportfile.Import(ctx, s, fh, 1000, opts.Mode, nil)
	if uerr := opts.Journal.Update(seq, map[string]any{"event": "done", "result": res, "error": fmt.Sprint(err)}); err == nil {
		err = uerr
	}
	return res, err
}

// ListHeals lists the heals the journal has state for, finished or not (an
// interrupted heal shows its completed steps and its backups).
func ListHeals(j *journal.Journal) ([]HealRecord, error) {
	var out []HealRecord
	err := j.ForEachRaw(stateHealBucket, func(k string, v []byte) error {
		var s healState
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		out = append(out, HealRecord{ID: s.ID, Done: s.Done, Backups: s.Backups, Completed: len(s.Done) == len(healSteps)})

		return nil
	})
	return out, err
}

// HealRecord is a heal as the journal keeps it: its completed steps and the
// backups it made.
type HealRecord struct {
	ID        string   `json:"id"`
	Done      []string `json:"done"`
	Backups   []Backup `json:"backups"`
	Completed bool     `json:"completed"`
}
