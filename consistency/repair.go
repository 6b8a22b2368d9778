package consistency

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
)

// Journal entry kinds written by this package.
const (
	EntryCheck  = "consistency.check"
	EntryRepair = "consistency.repair"
	EntryUndo   = "consistency.undo-repair"
)

// ErrAlreadyUndone is returned by UndoRepair for a run undone before.
var ErrAlreadyUndone = errors.New("repair already undone")

// ErrNotRepair is returned by UndoRepair for an entry that is not a repair.
var ErrNotRepair = errors.New("not a repair run")

// Op is what a repair does to one session.
type Op string

// Repair operations.
const (
	// CopyToTarget writes the source's copy to the target.
	CopyToTarget Op = "copy_to_target"
	// CopyToSource writes the target's copy to the source.
	CopyToSource Op = "copy_to_source"
	// DeleteFromTarget removes a session only the target holds
	// (RepairOptions.DeleteExtra).
	DeleteFromTarget Op = "delete_from_target"
	// DeleteFromSource removes a session only the source holds when the
	// service reads the target (RepairOptions.DeleteExtra).
	DeleteFromSource Op = "delete_from_source"
	// Skip leaves the session as it is (Why says why).
	Skip Op = "skip"
)

// IfUnchanged is the put mode of a phase-aware repair: a compare-and-set,
// the write (or delete) happens only while the destination still holds
// what the repair read there just before.
const IfUnchanged backends.PutMode = "if_unchanged"

// Action is one planned change.
type Action struct {
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	Op   Op     `json:"op"`
	// Mode is the put mode, decided on the node at write time: if_absent
	// for a side that lacked the session, if_newer for a side holding an
	// older copy, overwrite when both have the same last_accessed (the
	// source wins: it is the store the service reads in phase1).
	Mode backends.PutMode `json:"mode,omitempty"`
	Why  string           `json:"why"`
}

// RepairOptions tune Repair.
type RepairOptions struct {
	// Check finds the differences (Client is required there).
	Check Options
	// DryRun plans and reports without changing anything.
	DryRun bool
	// DeleteExtra deletes sessions that only the target holds instead of
	// copying them to the source.
	DeleteExtra bool
	// Reason is recorded in the journal.
	Reason string
	// Journal records the run and every value it overwrites (required
	// unless DryRun).
	Journal *journal.Journal
}

// RepairResult is what Repair planned and did.
type RepairResult struct {
	// Run is the journal sequence number of the run (0 for a dry run).
	Run     uint64   `json:"run,omitempty"`
	DryRun  bool     `json:"dry_run"`
	Check   *Report  `json:"check"`
	Actions []Action `json:"actions"`
	// Written and Deleted count what the nodes did; Skipped are puts the
	// node declined because the row changed meanwhile (already present,
	// or now as new as ours).
	Written int `json:"written"`
	Deleted int `json:"deleted"`
	Skipped int `json:"skipped"`
	// Saved is the number of previous values kept in the journal.
	Saved int `json:"saved"`
	// Authority is the phase of the hybrid backend the plan followed (nil:
	// the nodes do not run the hybrid over these two stores).
	Authority *Authority `json:"authority,omitempty"`
}

// RepairRecord is the journal body of a repair run.
type RepairRecord struct {
	Source      string        `json:"source"`
	Target      string        `json:"target"`
	SourceSpec  backends.Spec `json:"source_spec"`
	TargetSpec  backends.Spec `json:"target_spec"`
	SourceNode  string        `json:"source_node"`
	TargetNode  string        `json:"target_node"`
	State       string        `json:"state"` // saving, applying, done, failed, undone
	Actions     []Action      `json:"actions"`
	Written     int           `json:"written"`
	Deleted     int           `json:"deleted"`
	Skipped     int           `json:"skipped"`
	Saved       int           `json:"saved"`
	Error       string        `json:"error,omitempty"`
	SavedBucket string        `json:"saved_bucket"`
	Authority   *Authority    `json:"authority,omitempty"`
}

// Plan turns the differences of a report into actions (no I/O).
func Plan(rep *Report, deleteExtra bool) []Action {
	out := make([]Action, 0, len(rep.Differences))
	for _, d := range rep.Differences {
		a := Action{ID: d.ID, Kind: d.Kind}
		switch d.Kind {
		case KindMissingInTarget:
			a.Op, a.Mode, a.Why = CopyToTarget, backends.IfAbsent, "target lacks it"
		case KindExtraInTarget:
			if deleteExtra {
				a.Op, a.Why = DeleteFromTarget, "only the target holds it (--delete-extra)"
			} else {
				a.Op, a.Mode, a.Why = CopyToSource, backends.IfAbsent, "source lacks it"
			}
		case KindMismatched:
			switch d.Newer {
			case "target":
				a.Op, a.Mode, a.Why = CopyToSource, backends.IfNewer, "target's copy is newer"
			case "source":
				a.Op, a.Mode, a.Why = CopyToTarget, backends.IfNewer, "source's copy is newer"
			default:
				a.Op, a.Mode, a.Why = CopyToTarget, backends.Overwrite, "same last_accessed: the source wins"
			}
		}
		out = append(out, a)
	}
	return out
}

// Saved values are kept in the journal state bucket savedBucket(run), one
// key per side and id: "s:" or "t:" + id. A value is a tag ('V': the side
// held Old; 'A': it had no such session), <<OldLen:32, Old, New>> where New
// is what the repair wrote (nil for a delete). Undo restores Old (or
// deletes) only where the side still holds New, so a write the service
// made after the repair is never undone.
func savedBucket(run uint64) string { return "consistency.repair." + strconv.FormatUint(run, 10) }

func encodeSaved(had bool, old, wrote []byte) []byte {
	tag := byte('A')
	if had {
		tag = 'V'
	}
	b := make([]byte, 0, 5+len(old)+len(wrote))
	b = append(b, tag)
	b = binary.BigEndian.AppendUint32(b, uint32(len(old)))
	b = append(b, old...)
	return append(b, wrote...)
}

func decodeSaved(v []byte) (had bool, old, wrote []byte, ok bool) {
	if len(v) < 5 {
		return false, nil, nil, false
	}
	n := int(binary.BigEndian.Uint32(v[1:]))
	if len(v) < 5+n {
		return false, nil, nil, false
	}
	return v[0] == 'V', v[5 : 5+n], v[5+n:], true
}

// Repair finds the differences between source and target and, unless
// DryRun, makes the stores agree: the newer copy goes to the side that
// lacks the session or holds an older copy; nothing is deleted unless
// DeleteExtra. Every value it is about to overwrite or delete, and every
// absence it fills, is saved in the journal first, so UndoRepair(run)
// restores the stores as they were.
func Repair(ctx context.Context, source, target backends.Store, opts RepairOptions) (*RepairResult, error) {
	opts.Check = quiet(opts.Check)
	rep, err := Check(ctx, source, target, opts.Check)
	if err != nil {
		return nil, err
	}
	auth, err := readAuthority(ctx, opts.Check.Client, source, target, rep)
	if err != nil {
		return nil, err
	}
	res := &RepairResult{DryRun: opts.DryRun, Check: rep, Authority: auth}
	if auth != nil {
		res.Actions = PlanPhase(rep, opts.DeleteExtra, auth)
	} else {
		res.Actions = Plan(rep, opts.DeleteExtra)
	}
	if opts.DryRun || len(res.Actions) == 0 {
		return res, nil
	}
	if opts.Journal == nil {
		return nil, errors.New("repair: a journal is required to save what it overwrites")
	}
	log := opts.Check.withDefaults().Log
	var wire, trips atomic.Int64
	src := newSide(opts.Check.Client, source, &wire, &trips, opts.Check.Pace)
	tgt := newSide(opts.Check.Client, target, &wire, &trips, opts.Check.Pace)
	rec := RepairRecord{Source: src.name(), Target: tgt.name(), SourceSpec: source.Spec(), TargetSpec: target.Spec(),
		SourceNode: source.Node(), TargetNode: target.Node(), State: "saving", Actions: res.Actions, Authority: auth}
	run, err := opts.Journal.Append(EntryRepair, opts.Reason, rec)
	if err != nil {
		return nil, fmt.Errorf("repair: journal: %w", err)
	}
	res.Run = run
	rec.SavedBucket = savedBucket(run)
	fail := func(err error) (*RepairResult, error) {
		rec.State, rec.Error = "failed", err.Error()
		if uerr := opts.Journal.Update(run, rec); uerr != nil {
			log.Error("repair: recording the failure", "run", run, "err", uerr)
		}
		return res, err
	}

	// Save what each side holds now for every id it may be changed at.
	var toSrc, toTgt []string
	for _, a := range res.Actions {
		switch a.Op {
		case CopyToSource, DeleteFromSource:
			toSrc = append(toSrc, a.ID)
		case CopyToTarget, DeleteFromTarget:
			toTgt = append(toTgt, a.ID)
		}
	}
	all := append(append([]string(nil), toSrc...), toTgt...)
	curS, curT, err := both(ctx, src, tgt, func(ctx context.Context, s *side) (map[string][]byte, error) {
		return s.getMany(ctx, all)
	})
	if err != nil {
		return fail(err)
	}
	saved := map[string][]byte{}
	keep := func(prefix string, ids []string, cur, from map[string][]byte) {
		for _, id := range ids {
			old, had := cur[id]
			saved[prefix+id] = encodeSaved(had, old, from[id])
		}
	}
	keep("s:", toSrc, curS, curT)
	keep("t:", toTgt, curT, curS)
	if err := opts.Journal.PutRaw(rec.SavedBucket, saved); err != nil {
		return fail(fmt.Errorf("repair: saving previous values: %w", err))
	}
	res.Saved, rec.Saved = len(saved), len(saved)
	rec.State = "applying"
	if err := opts.Journal.Update(run, rec); err != nil {
		return fail(err)
	}

	if auth != nil {
		if err := applyCAS(ctx, src, tgt, res, curS, curT); err != nil {
			return fail(err)
		}
		rec.State, rec.Written, rec.Deleted, rec.Skipped = "done", res.Written, res.Deleted, res.Skipped
		if err := opts.Journal.Update(run, rec); err != nil {
			return res, err
		}
		log.Info("repair done", "run", run, "phase", auth.Phase, "written", res.Written, "deleted", res.Deleted, "skipped", res.Skipped)
		return res, nil
	}

	// Apply, grouped by destination and mode; the node decides each put
	// (if_absent, if_newer) against what it holds at that moment.
	type key struct {
		to   Op
		mode backends.PutMode
	}
	groups := map[key][]backends.Row{}
	var dels [][]byte
	for _, a := range res.Actions {
		switch a.Op {
		case CopyToTarget:
			if b, ok := curS[a.ID]; ok {
				groups[key{CopyToTarget, a.Mode}] = append(groups[key{CopyToTarget, a.Mode}], backends.Row{ID: []byte(a.ID), Blob: b})
			}
		case CopyToSource:
			if b, ok := curT[a.ID]; ok {
				groups[key{CopyToSource, a.Mode}] = append(groups[key{CopyToSource, a.Mode}], backends.Row{ID: []byte(a.ID), Blob: b})
			}
		case DeleteFromTarget:
			dels = append(dels, []byte(a.ID))
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].to+Op(keys[i].mode) < keys[j].to+Op(keys[j].mode) })
	for _, k := range keys {
		st := target
		if k.to == CopyToSource {
			st = source
		}
		rows := groups[k]
		for i := 0; i < len(rows); i += 500 {
			pr, err := st.Put(ctx, rows[i:min(i+500, len(rows))], k.mode)
			if err != nil {
				return fail(err)
			}
			res.Written += pr.Written
			res.Skipped += pr.Skipped
		}
	}
	if len(dels) > 0 {
		n, err := target.Delete(ctx, dels)
		if err != nil {
			return fail(err)
		}
		res.Deleted = n
	}
	rec.State, rec.Written, rec.Deleted, rec.Skipped = "done", res.Written, res.Deleted, res.Skipped
	if err := opts.Journal.Update(run, rec); err != nil {
		return res, err
	}
	log.Info("repair done", "run", run, "written", res.Written, "deleted", res.Deleted, "skipped", res.Skipped)
	return res, nil
}

// quiet gives o a logger that discards when it has none: a library logs
// only to the logger it is given, and a nil one means silence
// (Options.withDefaults would fall back to slog.Default()).
func quiet(o Options) Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Authority is which of the two stores the service reads, per the phase of
// the hybrid backend on the nodes: the primary in phase0 and phase1, the
// secondary in phase3, in phase2 the secondary for the sessions with
// erlang:phash2(Id, 100) < Percent and the primary for the others. A
// phase-aware repair writes only into the store the service does not read
// (for that session): the store it reads is the truth, and a session it no
// longer holds was deleted (copying it back would resurrect it).
type Authority struct {
	Phase   string `json:"phase"`
	Percent int    `json:"percent"`
	// Source and Target are the hybrid's sides the two stores are:
	// "primary" or "secondary".
	Source string `json:"source"`
	Target string `json:"target"`
	// routed: phase2, the ids read from the secondary.
	routed map[string]bool
}

// SourceReads tells whether the service reads session id from the source.
func (a *Authority) SourceReads(id string) bool {
	primary := true
	switch a.Phase {
	case "phase3":
		primary = false
	case "phase2":
		primary = !a.routed[id]
	}
	return primary == (a.Source == "primary")
}

func (a *Authority) reads(id string) string {
	if a.SourceReads(id) {
		return "source"
	}
	return "target"
}

// readAuthority asks the nodes of the two stores for the hybrid's phase.
// nil when no node runs the hybrid over these two stores.
func readAuthority(ctx context.Context, c *erl.Client, source, target backends.Store, rep *Report) (*Authority, error) {
	if c == nil {
		return nil, ErrNoClient
	}
	nodes := []string{source.Node()}
	if target.Node() != source.Node() {
		nodes = append(nodes, target.Node())
	}
	for _, n := range nodes {
		h, err := agentapi.Migrate{C: c}.HybridSides(ctx, n)
		if err != nil {
			var re *erl.RPCError
			if errors.As(err, &re) {
				continue // no store server there
			}
			return nil, fmt.Errorf("reading the migration phase on %s: %w", n, err)
		}
		if !h.Installed {
			continue
		}
		a := Authority{Phase: h.Phase, Percent: h.Percent}
		pk, sk := h.Primary, h.Secondary
		sKind, tKind := string(source.Spec().Kind), string(target.Spec().Kind)
		switch {
		case sKind == pk && tKind == sk:
			a.Source, a.Target = "primary", "secondary"
		case sKind == sk && tKind == pk:
			a.Source, a.Target = "secondary", "primary"
		default:
			return nil, nil // not the hybrid's two stores
		}
		if a.Phase == "phase2" {
			ids := make([]string, 0, len(rep.Differences))
			for _, d := range rep.Differences {
				ids = append(ids, d.ID)
			}
			a.routed = map[string]bool{}
			for i := 0; i < len(ids); i += 5000 {
				part := ids[i:min(i+5000, len(ids))]
				bits, err := agentapi.Agent{C: c}.Routed(ctx, n, part, a.Percent)
				if err != nil {
					return nil, fmt.Errorf("phase2 routing on %s: %w", n, err)
				}
				for j, id := range part {
					a.routed[id] = bits[j]
				}
			}
		}
		return &a, nil
	}
	return nil, nil
}

// PlanPhase is Plan for a cluster running the hybrid backend: only the
// store the service does not read is written, from the one it reads (no
// overwrite of the store it reads, whatever the last_accessed); a session
// only the non-read store holds was deleted from the read one and is not
// copied back (deleted from the other with deleteExtra, else skipped).
func PlanPhase(rep *Report, deleteExtra bool, a *Authority) []Action {
	out := make([]Action, 0, len(rep.Differences))
	for _, d := range rep.Differences {
		act := Action{ID: d.ID, Kind: d.Kind, Mode: IfUnchanged}
		reads := a.reads(d.ID)
		where := fmt.Sprintf("the service reads the %s in %s", reads, a.Phase)
		switch d.Kind {
		case KindMissingInTarget:
			switch {
			case reads == "source":
				act.Op, act.Why = CopyToTarget, "target lacks it; "+where
			case deleteExtra:
				act.Op, act.Why = DeleteFromSource, where+", which no longer holds it (--delete-extra)"
			default:
				act.Op, act.Mode, act.Why = Skip, "", where+", which no longer holds it: not copied back (--delete-extra deletes it from the source)"
			}
		case KindExtraInTarget:
			switch {
			case reads == "target":
				act.Op, act.Why = CopyToSource, "source lacks it; "+where
			case deleteExtra:
				act.Op, act.Why = DeleteFromTarget, where+", which no longer holds it (--delete-extra)"
			default:
				act.Op, act.Mode, act.Why = Skip, "", where+", which no longer holds it: not copied back (--delete-extra deletes it from the target)"
			}
		case KindMismatched:
			if reads == "source" {
				act.Op, act.Why = CopyToTarget, "the source's copy wins: "+where
			} else {
				act.Op, act.Why = CopyToSource, "the target's copy wins: "+where
			}
		}
		out = append(out, act)
	}
	return out
}

// applyCAS carries out a phase-aware plan: each change is a compare-and-set
// on the destination against what it held when read just before (curS,
// curT), so a session the service wrote or deleted meanwhile is left as
// the service left it (counted as skipped). A destination made of several
// nodes' stores is not written (which node serves a session is unknown).
func applyCAS(ctx context.Context, src, tgt *side, res *RepairResult, curS, curT map[string][]byte) error {
	type casRow struct{ id, expect, blob []byte }
	var toS, toT []casRow
	for _, a := range res.Actions {
		s, inS := curS[a.ID]
		t, inT := curT[a.ID]
		switch a.Op {
		case CopyToTarget:
			if !inS || (inT && bytes.Equal(s, t)) {
				res.Skipped++
				continue
			}
			toT = append(toT, casRow{[]byte(a.ID), t, s})
		case CopyToSource:
			if !inT || (inS && bytes.Equal(s, t)) {
				res.Skipped++
				continue
			}
			toS = append(toS, casRow{[]byte(a.ID), s, t})
		case DeleteFromSource:
			if !inS || inT {
				res.Skipped++
				continue
			}
			toS = append(toS, casRow{[]byte(a.ID), s, nil})
		case DeleteFromTarget:
			if !inT || inS {
				res.Skipped++
				continue
			}
			toT = append(toT, casRow{[]byte(a.ID), t, nil})
		}
	}
	for _, x := range []struct {
		sd   *side
		rows []casRow
	}{{src, toS}, {tgt, toT}} {
		if len(x.rows) == 0 {
			continue
		}
		if len(x.sd.parts) > 0 {
			res.Skipped += len(x.rows)
			continue
		}
		for i := 0; i < len(x.rows); i += 500 {
			var buf []byte
			for _, r := range x.rows[i:min(i+500, len(x.rows))] {
				for _, f := range [][]byte{r.id, r.expect, r.blob} {
					buf = binary.BigEndian.AppendUint32(buf, uint32(len(f)))
					buf = append(buf, f...)
				}
			}
			r, err := agentapi.Agent{C: x.sd.c}.PutIf(ctx, x.sd.node, agentStore(x.sd.store), buf)
			if err != nil {
				return fmt.Errorf("put_if on %s: %w", x.sd.name(), err)
			}
			res.Written += r.Written
			res.Deleted += r.Deleted
			res.Skipped += r.Skipped
		}
	}
	return nil
}

// UndoResult is what UndoRepair restored.
type UndoResult struct {
	Run      uint64 `json:"run"`
	Restored int    `json:"restored"`
	Deleted  int    `json:"deleted"`
	// Conflicts are sessions changed since the repair wrote them (by the
	// service): left as they are, listed here.
	Conflicts []string `json:"conflicts,omitempty"`
}

// UndoOptions tune UndoRepair.
type UndoOptions struct {
	Options
	// Journal holds the run (required).
	Journal *journal.Journal
	// Force restores even sessions changed since the repair.
	Force bool
	// Reason is recorded in the journal.
	Reason string
}

// UndoRepair puts back every value repair run `run` saved: overwritten
// sessions are written back as they were, sessions it added where there
// were none are deleted, deleted ones are written back. A session changed
// since the repair wrote it is left alone (a conflict) unless Force.
// source and target must be the run's stores (the journal entry names
// them; the caller opens them).
func UndoRepair(ctx context.Context, run uint64, source, target backends.Store, opts UndoOptions) (*UndoResult, error) {
	if opts.Client == nil {
		return nil, ErrNoClient
	}
	o := quiet(opts.Options).withDefaults()
	j := opts.Journal
	e, err := j.Get(run)
	if err != nil {
		return nil, err
	}
	if e.Kind != EntryRepair {
		return nil, fmt.Errorf("undo-repair %d: %w (it is %s)", run, ErrNotRepair, e.Kind)
	}
	var rec RepairRecord
	if err := e.Decode(&rec); err != nil {
		return nil, err
	}
	if rec.State == "undone" {
		return nil, fmt.Errorf("undo-repair %d: %w", run, ErrAlreadyUndone)
	}
	if source.Spec().Kind != rec.SourceSpec.Kind || target.Spec().Kind != rec.TargetSpec.Kind {
		return nil, fmt.Errorf("undo-repair %d: the run was %s → %s, not %s → %s", run, rec.Source, rec.Target, source.Spec(), target.Spec())
	}
	var wire, trips atomic.Int64
	type entry struct {
		id         string
		had        bool
		old, wrote []byte
	}
	type plan struct {
		sd      *side
		entries []entry
	}
	sides := map[byte]*plan{
		's': {sd: newSide(o.Client, source, &wire, &trips, o.Pace)},
		't': {sd: newSide(o.Client, target, &wire, &trips, o.Pace)},
	}
	err = j.ForEachRaw(savedBucket(run), func(k string, v []byte) error {
		p := sides[k[0]]
		had, old, wrote, ok := decodeSaved(v)
		if p == nil || len(k) < 2 || !ok {
			return fmt.Errorf("undo-repair %d: bad saved value %q", run, k)
		}
		p.entries = append(p.entries, entry{id: k[2:], had: had, old: bytes.Clone(old), wrote: bytes.Clone(wrote)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &UndoResult{Run: run}
	for _, c := range []byte{'s', 't'} {
		p := sides[c]
		if len(p.entries) == 0 {
			continue
		}
		ids := make([]string, len(p.entries))
		for i, e := range p.entries {
			ids[i] = e.id
		}
		cur, err := p.sd.getMany(ctx, ids)
		if err != nil {
			return res, err
		}
		var rows []backends.Row
		var dels [][]byte
		for _, e := range p.entries {
			now, present := cur[e.id]
			// What the repair left there: its write, or nothing (a delete).
			unchanged := (len(e.wrote) == 0 && !present) || (len(e.wrote) > 0 && present && bytes.Equal(now, e.wrote))
			if !unchanged && !opts.Force {
				res.Conflicts = append(res.Conflicts, e.id)
				continue
			}
			if e.had {
				rows = append(rows, backends.Row{ID: []byte(e.id), Blob: e.old})
			} else if present {
				dels = append(dels, []byte(e.id))
			}
		}
		for i := 0; i < len(rows); i += 500 {
			pr, err := p.sd.store.Put(ctx, rows[i:min(i+500, len(rows))], backends.Overwrite)
			if err != nil {
				return res, err
			}
			res.Restored += pr.Written
		}
		if len(dels) > 0 {
			n, err := p.sd.store.Delete(ctx, dels)
			if err != nil {
				return res, err
			}
			res.Deleted += n
		}
	}
	sort.Strings(res.Conflicts)
	rec.State = "undone"
	if err := j.Update(run, rec); err != nil {
		return res, err
	}
	if _, err := j.Append(EntryUndo, opts.Reason, map[string]any{"run": run, "restored": res.Restored, "deleted": res.Deleted,
		"conflicts": len(res.Conflicts), "time": time.Now().UTC()}); err != nil {
		return res, err
	}
	o.Log.Info("repair undone", "run", run, "restored", res.Restored, "deleted", res.Deleted, "conflicts", len(res.Conflicts))
	return res, nil
}
