package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// KeyChange is evidence: one key changed on one side since the split.
type KeyChange struct {
	ID           string `json:"id"`
	LastAccessed int64  `json:"last_accessed"` // ms; of the surviving row
	Written      int64  `json:"written"`       // record write time, ms
	// New is true for a session created after the split.
	New bool `json:"new,omitempty"`
	// On is the side holding the row, for KeptNearSplit: "winner" or "loser".
	On string `json:"on,omitempty"`
}

// Decision is what the heal does with one key the losing side changed.
type Decision struct {
	ID string `json:"id"`
	// Action: "write" (the loser's row goes into the healed cluster),
	// "delete" (the loser's deletion is applied) or "drop" (the loser's
	// change loses; nothing is done).
	Action   string `json:"action"`
	Why      string `json:"why"`
	LoserLA  int64  `json:"loser_last_accessed,omitempty"`
	WinnerLA int64  `json:"winner_last_accessed,omitempty"`
	// Evidence: decided from the recorded history of both sides. The
	// winner keeps taking traffic until the merge, and a change it makes
	// after the decision is later than the loser's change, so by the same
	// rule it wins: the merge applies the decision only while the winner
	// has not changed the key since, that is while its row is still the
	// one the decision saw (WinnerDigest, the record digest migctl_buckets reports;
	// 0 when the winner had no row) AND the merge node's change recorder
	// has recorded no change of the key after WinnerSeen. The digest alone
	// misses a delete of a row already absent, and a write then a delete
	// that leave it absent again. Without evidence the merge re-checks by
	// last_accessed and write time instead.
	Evidence     bool   `json:"evidence,omitempty"`
	WinnerDigest uint32 `json:"winner_digest,omitempty"`
	// WinnerSeen is the time (ms, that node's clock) of the last change of
	// the key the merge node's recorder had when the decision was made
	// (IslandPlan.Rep of the winner), 0 when it had none; nil when that
	// recorder was not read (the digest alone is checked).
	WinnerSeen *int64 `json:"winner_seen,omitempty"`
	// WinnerSeenUs is the same time in µs, what the merge compares (nil
	// in a plan written before it was kept: WinnerSeen's millisecond
	// counts as seen whole).
	WinnerSeenUs *int64 `json:"winner_seen_us,omitempty"`
	// LoserChanged is the time (ms, the recording node's clock) of the
	// loser's last recorded change of the key, for a decision on evidence;
	// 0 when it recorded none. With more than one losing island it is what
	// the losers' changes of one key are weighed by (Overruled).
	LoserChanged int64 `json:"loser_changed,omitempty"`
	// LoserChangedUs is the same time in µs, what the changes are
	// ordered by (0 in a plan written before it was kept: LoserChanged ×
	// 1000).
	LoserChangedUs int64 `json:"loser_changed_us,omitempty"`
	// Overruled is set when another losing island changed the key later:
	// this loser's change is dropped (Action "drop") and the later change
	// decides, as if the losers had been one side. Nil otherwise.
	Overruled *Overrule `json:"overruled,omitempty"`
}

// loserChangedUs is LoserChanged in µs.
func (d Decision) loserChangedUs() int64 {
	if d.LoserChangedUs != 0 {
		return d.LoserChangedUs
	}
	return d.LoserChanged * 1000
}

// Overrule says which later change overruled a loser's decision: with
// three or more islands, two losing islands may have changed the same key
// during the split, each later than the winner; the later of the two
// wins (see weighLosers).
type Overrule struct {
	// Was and WasWhy are the decision this loser's own comparison with
	// the winner made.
	Was    string `json:"was"`
	WasWhy string `json:"was_why"`
	// Island is the losing island whose change is the later one; Op
	// ("write" or "delete") and At (ms) that change.
	Island int    `json:"island"`
	Op     string `json:"op"`
	At     int64  `json:"at"`
	// Applied is what that change comes to in the merge: that island's
	// decision ("write", "delete"), or "none" when its copy is already the
	// winner's (the winner's row, or its absence, stands).
	Applied string `json:"applied"`
}

// Action values of a Decision.
const (
	ActWrite  = "write"
	ActDelete = "delete"
	ActDrop   = "drop"
)

// IslandPlan is one island as the plan sees it.
type IslandPlan struct {
	Nodes []string `json:"nodes"`
	// Rep is the node whose local copy stands for the island.
	Rep string `json:"rep"`
	// LastWrite is the latest record write time in the island's copies (ms).
	LastWrite int64            `json:"last_write"`
	Sizes     map[string]int64 `json:"sizes"` // table -> rows
	// Unreachable marks a node migctl cannot read (PlanOptions.OutOfBand):
	// it loses, is restarted out of band, and its writes since the split
	// stay in its moved-aside Mnesia directory instead of being merged.
	Unreachable bool `json:"unreachable,omitempty"`
}

// LoserPlan compares one losing island with the winner for one table.
type LoserPlan struct {
	Island int `json:"island"`
	// SplitAt is the split time used to tell deletions from new writes (ms).
	SplitAt int64 `json:"split_at"`
	// SplitAtSource: "operator", "mnesia_down" (when the nodes' Mnesia
	// saw each other go down, later than the data's bound) or "data".
	SplitAtSource string `json:"split_at_source"`
	// SplitAtDetail says where the split time came from, in words.
	SplitAtDetail string `json:"split_at_detail,omitempty"`
	// SplitAtData is the data's lower bound of the split: just after the
	// latest write both sides hold identically (ms).
	SplitAtData int64 `json:"split_at_data,omitempty"`
	// KeepFrom starts the keep window (ms, Plan.KeepWindowMillis before
	// SplitAt): a row written from then on and present on one side only
	// may never have reached the other side, so it is kept, never taken
	// for a deletion. Only rows written before KeepFrom can be deleted by
	// the heal. Zero in plans of older migctl versions: SplitAt then.
	KeepFrom int64 `json:"keep_from,omitempty"`
	// KeptNearSplit: rows on one side only, written inside the keep window.
	KeptNearSplit []KeyChange `json:"kept_near_split,omitempty"`
	// Evidence: what each side wrote or deleted since the split.
	WrittenOnLoser  []KeyChange `json:"written_on_loser"`
	DeletedOnLoser  []KeyChange `json:"deleted_on_loser"`
	WrittenOnWinner []KeyChange `json:"written_on_winner"`
	DeletedOnWinner []KeyChange `json:"deleted_on_winner"`
	// Decisions for every key the loser changed.
	Decisions []Decision `json:"decisions"`
	// EvidenceComplete: both sides' change recorders cover the whole
	// split (and the keep window before it), so every decision comes from
	// the recorded history, except for keys neither side recorded a change
	// of (their decisions say so). Evidence says why or why not.
	EvidenceComplete bool   `json:"evidence_complete"`
	Evidence         string `json:"evidence"`
}

// deleteBefore is the write time before which a row missing on one side
// counts as deleted there.
func (lp *LoserPlan) deleteBefore() int64 {
	if lp.KeepFrom > 0 && lp.KeepFrom < lp.SplitAt {
		return lp.KeepFrom
	}
	return lp.SplitAt
}

// Counts of decisions by action.
func (lp *LoserPlan) Counts() (write, del, drop int) {
	for _, d := range lp.Decisions {
		switch d.Action {
		case ActWrite:
			write++
		case ActDelete:
			del++
		default:
			drop++
		}
	}
	return
}

// Overruled counts the decisions dropped because another losing island
// changed the key later (Decision.Overruled).
func (lp *LoserPlan) Overruled() int {
	n := 0
	for _, d := range lp.Decisions {
		if d.Overruled != nil {
			n++
		}
	}
	return n
}

// TablePlan is the plan for one table.
type TablePlan struct {
	Table string `json:"table"`
	// Buckets is the number of hash buckets the comparison used.
	Buckets int         `json:"buckets"`
	Losers  []LoserPlan `json:"losers"`
}

// Plan is what a heal will do, and why.
type Plan struct {
	Time         time.Time    `json:"time"`
	Islands      []IslandPlan `json:"islands"`
	Winner       int          `json:"winner"`
	WinnerReason string       `json:"winner_reason"`
	Tables       []TablePlan  `json:"tables"`
	// KeepWindowMillis is how long before the split a write may still not
	// have reached the other side (see LoserPlan.KeepFrom), and
	// KeepWindowDetail where that figure came from.
	KeepWindowMillis int64  `json:"keep_window_ms"`
	KeepWindowDetail string `json:"keep_window_detail"`
	// Status is the status the plan was made from.
	Status *Status `json:"status"`
}

// WinnerNodes are the nodes of the winning island.
func (p *Plan) WinnerNodes() []string { return p.Islands[p.Winner].Nodes }

// LoserNodes are the nodes of every losing island.
func (p *Plan) LoserNodes() []string {
	var out []string
	for i, is := range p.Islands {
		if i != p.Winner {
			out = append(out, is.Nodes...)
		}
	}
	return out
}

// PlanOptions tune Plan.
type PlanOptions struct {
	// Winner is a node of the island the operator wants to win; empty
	// picks the largest island, then the one with the latest write.
	Winner string
	// SplitAt is the time of the split when the operator knows it (from
	// logs or a Watch); zero estimates it from the data.
	SplitAt time.Time
	// OutOfBand are nodes the heal will restart out of band. Those migctl
	// cannot read (unreachable, wedged) are planned as losing islands of
	// their own, without evidence; the heal then runs even when the
	// reachable nodes agree (a degraded cluster).
	OutOfBand []string
	// KeepWindow is how long before the split time a write may not have
	// reached the other side yet: a row present on one side only and
	// written that close to the split is kept rather than taken for a
	// deletion. Nodes notice a cut link only after net_ticktime, and
	// Mnesia commits a transaction whose peer stopped answering once that
	// peer is declared down, with the timestamp it took before: such rows
	// look older than the split although the other side never had them
	// (TestHealRealNetworkPartition). Zero: 1.25 × the largest
	// net_ticktime of the nodes + 2 s (Mnesia's own mnesia_down record is
	// to the second). Negative: no window (a deletion wins up to the
	// split; writes of the detection window can be lost).
	KeepWindow time.Duration
}

// autoKeepWindow is the keep window for a largest net_ticktime of tick
// seconds: a cut is noticed within 1.25 × net_ticktime, and Mnesia's
// mnesia_down records are to the second, plus a second for clock skew.
func autoKeepWindow(tick int64) time.Duration {
	return time.Duration(tick)*1250*time.Millisecond + 2*time.Second
}

// keepWindow settles PlanOptions.KeepWindow, reading net_ticktime from the
// nodes when it is automatic.
func (cl *Cluster) keepWindow(ctx context.Context, opts PlanOptions, nodes []string) (time.Duration, string) {
	switch {
	case opts.KeepWindow < 0:
		return 0, "none (--keep-window off): a row missing on one side and written before the split counts as deleted there"
	case opts.KeepWindow > 0:
		return opts.KeepWindow, "given by the operator"
	}
	ticks := make([]int64, len(nodes))
	forEach(nodes, func(i int, n string) {
		t, err := cl.api().NetTicktime(ctx, n)
		if err != nil {
			cl.log.Debug("plan: net_ticktime unreadable", "node", n, "err", err)
			return
		}
		ticks[i] = t
	})
	tick := slices.Max(append(ticks, 0))
	what := fmt.Sprintf("largest net_ticktime of the nodes %d s", tick)
	if tick <= 0 {
		tick = 60
		what = "net_ticktime unreadable, OTP's default 60 s assumed"
	}
	w := autoKeepWindow(tick)
	return w, fmt.Sprintf("%s × 1.25 + 2 s: a cut link is noticed only after that long, and writes made meanwhile may have reached one side only", what)
}

// Plan works out a heal: the islands, each island's changes since the split
// (the evidence), the winner and why, and the decision for every key the
// losers changed. It changes nothing.
func (cl *Cluster) Plan(ctx context.Context, opts PlanOptions) (*Plan, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	var lost []string
	for _, v := range st.Nodes {
		if contains(opts.OutOfBand, v.Node) && !(v.MnesiaRunning() && v.Error == "") {
			lost = append(lost, v.Node)
		}
	}
	if (st.Verdict != Partitioned || len(st.Islands) < 2) && len(lost) == 0 {
		return nil, fmt.Errorf("%w: verdict %s, islands %v", ErrNotPartitioned, st.Verdict, st.Islands)
	}
	if len(st.Islands) == 0 {
		return nil, fmt.Errorf("%w: no node runs Mnesia", ErrNotPartitioned)
	}
	p := &Plan{Time: time.Now().UTC(), Status: st}
	t0 := time.Now()
	// Per island, per table: the representative's bucket sums, all read
	// at once (each is a fold over the node's local copy).
	nb := map[string]int{}
	for _, tab := range cl.tables {
		nb[tab] = cl.bucketsFor(tableSize(st, tab))
	}
	sums := make([]map[string][]bucketSum, len(st.Islands))
	p.Islands = make([]IslandPlan, len(st.Islands))
	errs := make([]error, len(st.Islands))
	reps := make([]string, len(st.Islands))
	for i, nodes := range st.Islands {
		reps[i] = nodes[0]
	}
	forEach(reps, func(i int, rep string) {
		ip := IslandPlan{Nodes: st.Islands[i], Rep: rep, Sizes: map[string]int64{}}
		sums[i] = map[string][]bucketSum{}
		for _, tab := range cl.tables {
			s, err := cl.bucketSums(ctx, rep, tab, nb[tab])
			if err != nil {
				errs[i] = fmt.Errorf("plan: read island %v: %w", st.Islands[i], err)
				return
			}
			sums[i][tab] = s
			for _, b := range s {
				ip.Sizes[tab] += int64(b.Count)
				ip.LastWrite = max(ip.LastWrite, b.MaxWritten)
			}
		}
		p.Islands[i] = ip
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, n := range lost {
		p.Islands = append(p.Islands, IslandPlan{Nodes: []string{n}, Unreachable: true, Sizes: map[string]int64{}})
	}
	cl.log.Debug("plan: bucket sums read", "took", time.Since(t0))
	p.Winner, p.WinnerReason, err = pickWinner(p.Islands, opts.Winner)
	if err != nil {
		return nil, err
	}
	w := p.Winner
	window, detail := cl.keepWindow(ctx, opts, reachableNodes(p.Islands))
	p.KeepWindowMillis, p.KeepWindowDetail = window.Milliseconds(), detail
	// When each side saw the other's Mnesia go down: an upper bound of
	// the split, usually much closer to it than the data's lower bound.
	downs := make([][]downRecord, len(p.Islands))
	if opts.SplitAt.IsZero() {
		forEach(make([]string, len(p.Islands)), func(l int, _ string) {
			if l != w && !p.Islands[l].Unreachable {
				downs[l] = cl.downs(ctx, p.Islands[w].Nodes, p.Islands[l].Nodes)
			}
		})
	}
	for _, tab := range cl.tables {
		tp := TablePlan{Table: tab, Buckets: nb[tab]}
		for l := range p.Islands {
			if l == w || p.Islands[l].Unreachable {
				continue
			}
			lp, err := cl.compare(ctx, tab, p.Islands[w], p.Islands[l], sums[w][tab], sums[l][tab], opts.SplitAt, downs[l], window, 0)
			if err != nil {
				return nil, err
			}
			lp.Island = l
			tp.Losers = append(tp.Losers, lp)
		}
		if _, err := cl.weighLosers(ctx, p, &tp); err != nil {
			return nil, err
		}
		p.Tables = append(p.Tables, tp)
	}
	return p, nil
}

func pickWinner(is []IslandPlan, want string) (int, string, error) {
	if want != "" {
		for i, x := range is {
			if contains(x.Nodes, want) && !x.Unreachable {
				return i, fmt.Sprintf("operator's choice (--winner %s)", want), nil
			}
		}
		return 0, "", fmt.Errorf("%w: --winner %s is in no island with Mnesia running (islands: %v)", ErrUnknownNode, want, islandNodes(is))
	}
	best := 0 // Status puts the reachable islands first
	for i := range is {
		a, b := is[i], is[best]
		if a.Unreachable {
			continue
		}
		if len(a.Nodes) > len(b.Nodes) || (len(a.Nodes) == len(b.Nodes) && a.LastWrite > b.LastWrite) {
			best = i
		}
	}
	tie := 0
	for _, x := range is {
		if len(x.Nodes) == len(is[best].Nodes) && !x.Unreachable {
			tie++
		}
	}
	if tie == 1 {
		return best, fmt.Sprintf("largest island (%d of %d nodes)", len(is[best].Nodes), len(islandNodes(is))), nil
	}
	return best, fmt.Sprintf("islands of equal size (%d nodes); this one has the most recent write (%s)",
		len(is[best].Nodes), time.UnixMilli(is[best].LastWrite).UTC().Format(time.RFC3339Nano)), nil
}

// reachableNodes are the nodes of the islands migctl can read.
func reachableNodes(is []IslandPlan) []string {
	var out []string
	for _, x := range is {
		if !x.Unreachable {
			out = append(out, x.Nodes...)
		}
	}
	return out
}

func islandNodes(is []IslandPlan) []string {
	var out []string
	for _, x := range is {
		out = append(out, x.Nodes...)
	}
	return out
}

// compare classifies every key that differs between the winner's and a
// loser's copy (see the package documentation for the rules).
//
// keepFrom, when not zero, is the keep window's start decided before (a
// heal's own comparisons keep the plan's, rather than one derived from
// data the heal itself changed).
func (cl *Cluster) compare(ctx context.Context, tab string, wIs, lIs IslandPlan, ws, ls []bucketSum, splitAt time.Time, downs []downRecord, window time.Duration, keepFrom int64) (LoserPlan, error) {
	var lp LoserPlan
	wRep, lRep := wIs.Rep, lIs.Rep
	idx := diffBuckets(ws, ls)
	t0 := time.Now()
	var wk, lk map[string]keyInfo
	var werr, lerr error
	forEach([]string{wRep, lRep}, func(i int, n string) {
		if i == 0 {
			wk, werr = cl.bucketKeys(ctx, n, tab, len(ws), idx)
		} else {
			lk, lerr = cl.bucketKeys(ctx, n, tab, len(ws), idx)
		}
	})
	if err := errors.Join(werr, lerr); err != nil {
		return lp, err
	}
	cl.log.Debug("plan: keys of differing buckets read", "table", tab, "buckets", len(idx), "keys", len(wk)+len(lk), "took", time.Since(t0))
	// The data's lower bound: the latest write both sides hold
	// identically, in the agreeing buckets and among the identical keys
	// of the differing ones; writes at exactly that millisecond were seen
	// by both.
	var seen int64
	for i := range ws {
		if ws[i].Count == ls[i].Count && ws[i].Sum == ls[i].Sum && ws[i].Count > 0 {
			seen = max(seen, ws[i].MaxWritten)
		}
	}
	for id, l := range lk {
		if w, ok := wk[id]; ok && w.Digest == l.Digest {
			seen = max(seen, l.Written)
		}
	}
	lp.SplitAtData = seen + 1
	switch {
	case !splitAt.IsZero():
		lp.SplitAt, lp.SplitAtSource = splitAt.UnixMilli(), "operator"
		lp.SplitAtDetail = "given by the operator"
	default:
		lp.SplitAt, lp.SplitAtSource = lp.SplitAtData, "data"
		lp.SplitAtDetail = fmt.Sprintf("just after the latest write both sides hold identically (%s); no mnesia_down record later than that",
			msTime(seen))
		if d, ok := splitFromDowns(downs, lp.SplitAtData); ok && d.Millis > lp.SplitAt {
			lp.SplitAt, lp.SplitAtSource = d.Millis, "mnesia_down"
			lp.SplitAtDetail = d.describe() + fmt.Sprintf("; later than the data's bound %s, so a row the other side deleted after the split is not taken for a new write", msTime(seen))
		}
	}
	// The window reaches back no further than the data's bound: a row
	// written before the latest write both sides hold identically had
	// reached both (commits reorder against their timestamps only when
	// writers of the same key wait for each other, and then both sides
	// hold that key). So when T is the data's bound there is no window,
	// and when it is a mnesia_down time the window covers the detection.
	lp.KeepFrom = min(max(lp.SplitAt-max(window.Milliseconds(), 0), lp.SplitAtData), lp.SplitAt)
	if keepFrom > 0 {
		lp.KeepFrom = keepFrom
	}
	// With both sides' change records covering the split and the window
	// before it, the decisions come from what each side recorded; the
	// rows' times are only the fallback.
	ids := differing(wk, lk)
	ev, err := cl.readEvidence(ctx, tab, wIs.Nodes, lIs.Nodes, wRep, ids)
	if err != nil {
		lp.Evidence = "change records could not be read: " + err.Error()
		classify(&lp, wk, lk)
		return lp, nil
	}
	// The records must reach back to the cut itself: a change applied on
	// one side just before it may never have reached the other. Both the
	// data's bound (a write both sides hold was applied before the cut)
	// and T minus the window (the cut is noticed within the window) are
	// lower bounds of the cut, and KeepFrom is the later of them; a
	// quarter of a second less, for clocks and messages in flight.
	ev.Need = lp.deleteBefore() - 250
	lp.EvidenceComplete, lp.Evidence = ev.complete()
	if lp.EvidenceComplete {
		classifyEvidence(&lp, wk, lk, ev)
	} else {
		classify(&lp, wk, lk)
		lp.Evidence += "; decided from the rows' times and the split time"
	}
	return lp, nil
}

// classifyEvidence decides every key that differs between the winner's
// keys wk and a loser's keys lk from both sides' records: the side whose
// last change of the key is the later one wins, its row or its deletion
// alike (equal times: a row over a deletion, then the winner). A key
// neither side recorded a change of is decided as classify does, and its
// decision says so.
func classifyEvidence(lp *LoserPlan, wk, lk map[string]keyInfo, ev *evidence) {
	from := lp.deleteBefore()
	for _, id := range differing(wk, lk) {
		w, inW := wk[id]
		l, inL := lk[id]
		eW, okW := ev.W.last(id)
		eL, okL := ev.L.last(id)
		// Reported as a side's change: one made on that side (not a
		// write replicated to it before the split) since the window.
		if madeBy(eL, okL, ev.lNodes) && eL.At >= from {
			c := KeyChange{ID: id, Written: eL.At, LastAccessed: l.LastAccessed, New: inL && l.Created >= lp.SplitAt}
			if inL {
				lp.WrittenOnLoser = append(lp.WrittenOnLoser, c)
			} else {
				lp.DeletedOnLoser = append(lp.DeletedOnLoser, c)
			}
		}
		if madeBy(eW, okW, ev.wNodes) && eW.At >= from {
			c := KeyChange{ID: id, Written: eW.At, LastAccessed: w.LastAccessed, New: inW && w.Created >= lp.SplitAt}
			if inW {
				lp.WrittenOnWinner = append(lp.WrittenOnWinner, c)
			} else {
				lp.DeletedOnWinner = append(lp.DeletedOnWinner, c)
			}
		}
		if !okW && !okL {
			sub := LoserPlan{SplitAt: lp.SplitAt, KeepFrom: lp.KeepFrom}
			one := func(ok bool, k keyInfo) map[string]keyInfo {
				if ok {
					return map[string]keyInfo{id: k}
				}
				return map[string]keyInfo{}
			}
			classify(&sub, one(inW, w), one(inL, l))
			for _, d := range sub.Decisions {
				d.Why += " (neither side recorded a change of this key: decided from the row's times)"
				lp.Decisions = append(lp.Decisions, d)
			}
			lp.KeptNearSplit = append(lp.KeptNearSplit, sub.KeptNearSplit...)
			continue
		}
		loserLast := okL && (!okW || eL.us() > eW.us() || (eL.us() == eW.us() && inL && !inW))
		d := Decision{ID: id, Evidence: true}
		if okL {
			d.LoserChanged, d.LoserChangedUs = eL.At, eL.us()
		}
		if inL {
			d.LoserLA = l.LastAccessed
		}
		if inW {
			d.WinnerLA, d.WinnerDigest = w.LastAccessed, w.Digest
		}
		d.WinnerSeen, d.WinnerSeenUs = ev.W.seenOn(ev.wRep, id)
		desc := func(c change, ok bool, side sideEvidence) string {
			if !ok {
				return "none recorded since " + msTime(side.Since)
			}
			return c.String()
		}
		last := fmt.Sprintf("loser's last change: %s; winner's: %s", desc(eL, okL, ev.L), desc(eW, okW, ev.W))
		switch {
		case loserLast && inL:
			d.Action, d.Why = ActWrite, "the loser's write is the later change ("+last+")"
		case loserLast:
			d.Action, d.Why = ActDelete, "the loser's deletion is the later change ("+last+")"
		case inL && madeBy(eL, okL, ev.lNodes) && eL.At >= from:
			d.Action, d.Why = ActDrop, "the winner's change is the later one ("+last+")"
		default:
			continue // the winner's later change stands; the loser changed nothing since the split
		}
		lp.Decisions = append(lp.Decisions, d)
	}
	for _, l := range [][]KeyChange{lp.WrittenOnLoser, lp.DeletedOnLoser, lp.WrittenOnWinner, lp.DeletedOnWinner, lp.KeptNearSplit} {
		sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	}
	sort.Slice(lp.Decisions, func(i, j int) bool { return lp.Decisions[i].ID < lp.Decisions[j].ID })
}

// weighLosers settles the keys more than one losing island changed. Each
// loser is compared with the winner alone, so two losers can both decide
// to merge their change of one key (each later than the winner's), or one
// can decide to merge a change older than another loser's whose copy
// happens to equal the winner's (both deleted the key). Merged one after
// the other, the first applied would stand: the order of the islands
// would decide, not the time of the changes. So for every key a loser
// decided to write or delete, the change records of every losing island
// are read and only the island with the latest change keeps its decision;
// the others' are dropped and marked (Decision.Overruled). Equal times: a
// row over a deletion, then the island listed first (the recorders are to
// the millisecond; see docs/split-brain.md).
//
// Only losers whose decisions come from complete records take part (the
// others are merged by the rows' times, as before). Overrules of an
// earlier weighing are undone first: the heal weighs again after each read
// of the losers' changes, from the decisions as they are then.
func (cl *Cluster) weighLosers(ctx context.Context, p *Plan, tp *TablePlan) (string, error) {
	in, ids := weighPrepare(tp)
	if len(ids) == 0 {
		return "", nil
	}
	// Every losing island's records of those keys, also of the islands
	// that decided nothing for a key (their copy is the winner's).
	evs := make([]sideEvidence, len(in))
	errs := make([]error, len(in))
	forEach(make([]string, len(in)), func(k int, _ string) {
		evs[k], errs[k] = cl.islandEvidence(ctx, p.Islands[tp.Losers[in[k]].Island].Nodes, tp.Table, ids)
	})
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("plan: weigh the losing islands' changes of %s: %w", tp.Table, err)
	}
	n := overrule(tp, in, ids, evs)
	if n == 0 {
		return "", nil
	}
	return fmt.Sprintf("%s: %d changes of losing islands overruled by a later change on another losing island", tp.Table, n), nil
}

// weighPrepare undoes the overrules of an earlier weighing and lists the
// losers taking part (indexes into tp.Losers: those decided from complete
// records) and the keys to weigh (those any of them decided to write or
// delete); no keys when fewer than two losers take part.
func weighPrepare(tp *TablePlan) (in []int, ids []string) {
	for i := range tp.Losers {
		lp := &tp.Losers[i]
		for j := range lp.Decisions {
			if o := lp.Decisions[j].Overruled; o != nil {
				lp.Decisions[j].Action, lp.Decisions[j].Why, lp.Decisions[j].Overruled = o.Was, o.WasWhy, nil
			}
		}
		if lp.EvidenceComplete {
			in = append(in, i)
		}
	}
	if len(in) < 2 {
		return in, nil
	}
	keys := map[string]bool{}
	for _, i := range in {
		for _, d := range tp.Losers[i].Decisions {
			if d.Action == ActWrite || d.Action == ActDelete {
				keys[d.ID] = true
			}
		}
	}
	for id := range keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return in, ids
}

// overrule keeps, for each of ids, only the decision of the losing island
// (of in, indexes into tp.Losers) whose change is the latest, and drops
// and marks the others' write and delete decisions. evs[k] are the records
// of island in[k]. An island's change is its decision's (LoserChanged,
// the change that decision is about) or, without one, its latest record;
// an island with neither did not change the key since its records began.
// It returns how many decisions it overruled.
func overrule(tp *TablePlan, in []int, ids []string, evs []sideEvidence) int {
	decided := make([]map[string]int, len(in)) // id -> index into Decisions
	for k, i := range in {
		decided[k] = map[string]int{}
		for j, d := range tp.Losers[i].Decisions {
			if d.Action == ActWrite || d.Action == ActDelete {
				decided[k][d.ID] = j
			}
		}
	}
	type cand struct {
		k   int
		at  int64
		op  byte
		dec string // the island's decision, "" for none
	}
	opName := func(op byte) string {
		if op == opDelete {
			return "delete"
		}
		return "write"
	}
	n := 0
	for _, id := range ids {
		var best cand
		found := false
		for k, i := range in {
			c := cand{k: k}
			j, has := decided[k][id]
			rec, ok := evs[k].last(id)
			switch {
			case has && tp.Losers[i].Decisions[j].Evidence && tp.Losers[i].Decisions[j].LoserChanged > 0:
				d := tp.Losers[i].Decisions[j]
				c.at, c.op, c.dec = d.loserChangedUs(), opWrite, d.Action
				if d.Action == ActDelete {
					c.op = opDelete
				}
			case ok:
				c.at, c.op = rec.us(), rec.Op
				if has {
					c.dec = tp.Losers[i].Decisions[j].Action
				}
			default:
				continue // no record of the key: the island did not change it since its records began
			}
			// Later wins (µs); at the same time a row over a deletion,
			// then the island listed first.
			if !found || c.at > best.at || (c.at == best.at && c.op == opWrite && best.op == opDelete) {
				best, found = c, true
			}
		}
		if !found {
			continue
		}
		applied := best.dec
		if applied == "" {
			applied = "none"
		}
		bi := tp.Losers[in[best.k]].Island
		for k, i := range in {
			j, has := decided[k][id]
			if k == best.k || !has {
				continue
			}
			d := &tp.Losers[i].Decisions[j]
			o := &Overrule{Was: d.Action, WasWhy: d.Why, Island: bi, Op: opName(best.op), At: agentapi.MsOfUs(best.at), Applied: applied}
			own := "none recorded"
			if d.LoserChanged > 0 {
				own = msTime(d.LoserChanged)
			}
			then := "that island's " + applied + " is merged"
			if applied == "none" {
				then = "its copy is the winner's, which stands"
			}
			d.Action, d.Overruled = ActDrop, o
			d.Why = fmt.Sprintf("overruled: losing island %d changed it later (%s at %s; this island's last change: %s), %s; this island's own comparison said: %s: %s",
				bi, o.Op, msTime(o.At), own, then, o.Was, o.WasWhy)
			n++
		}
	}
	return n
}

// classify decides every key that differs between the winner's keys wk
// and a loser's keys lk, by lp's split time T and keep window start K
// (see the package documentation for the rules).
func classify(lp *LoserPlan, wk, lk map[string]keyInfo) {
	T, K := lp.SplitAt, lp.deleteBefore()
	change := func(id string, k keyInfo) KeyChange {
		return KeyChange{ID: id, LastAccessed: k.LastAccessed, Written: k.Written, New: k.Created >= T}
	}
	for id, l := range lk {
		w, inW := wk[id]
		switch {
		case inW && w.Digest == l.Digest:
			continue
		case inW:
			if l.Written >= T {
				lp.WrittenOnLoser = append(lp.WrittenOnLoser, change(id, l))
			}
			if w.Written >= T {
				lp.WrittenOnWinner = append(lp.WrittenOnWinner, change(id, w))
			}
			if l.Written < K {
				continue // only the winner changed it: nothing of the loser's to keep
			}
			d := Decision{ID: id, LoserLA: l.LastAccessed, WinnerLA: w.LastAccessed}
			if l.LastAccessed > w.LastAccessed {
				d.Action, d.Why = ActWrite, "both sides wrote it; the loser's last_accessed is newer"
			} else {
				d.Action, d.Why = ActDrop, "both sides wrote it; the winner's last_accessed is newer or equal"
			}
			if l.Written < T {
				d.Why += " (the loser's write is from just before the split and may not have reached the winner)"
			}
			lp.Decisions = append(lp.Decisions, d)
		case l.Written < K:
			// On the loser from before the split, gone on the winner: the
			// winner deleted it; that deletion wins over the older row.
			lp.DeletedOnWinner = append(lp.DeletedOnWinner, change(id, l))
		case l.Written < T:
			c := change(id, l)
			c.On = "loser"
			lp.KeptNearSplit = append(lp.KeptNearSplit, c)
			lp.Decisions = append(lp.Decisions, Decision{ID: id, Action: ActWrite, LoserLA: l.LastAccessed,
				Why: "written on the loser just before the split (inside the keep window) and absent on the winner: it may never have reached the winner, so it is kept"})
		default:
			c := change(id, l)
			lp.WrittenOnLoser = append(lp.WrittenOnLoser, c)
			d := Decision{ID: id, Action: ActWrite, LoserLA: l.LastAccessed}
			if c.New {
				d.Why = "created on the loser during the split"
			} else {
				d.Why = "written on the loser during the split and absent on the winner (the winner may have deleted it; Mnesia keeps no deletion time, so the write is kept)"
			}
			lp.Decisions = append(lp.Decisions, d)
		}
	}
	for id, w := range wk {
		if _, inL := lk[id]; inL {
			continue
		}
		switch {
		case w.Written < K:
			// On the winner from before the split, gone on the loser: the
			// loser deleted it during the split.
			lp.DeletedOnLoser = append(lp.DeletedOnLoser, change(id, w))
			lp.Decisions = append(lp.Decisions, Decision{ID: id, Action: ActDelete, WinnerLA: w.LastAccessed,
				Why: "deleted on the loser during the split; the winner's row is older than the split"})
		case w.Written < T:
			// Written on the winner just before the split: the loser may
			// never have received it. It stays; the loser reloads it.
			c := change(id, w)
			c.On = "winner"
			lp.KeptNearSplit = append(lp.KeptNearSplit, c)
		default:
			lp.WrittenOnWinner = append(lp.WrittenOnWinner, change(id, w))
		}
	}
	for _, l := range [][]KeyChange{lp.WrittenOnLoser, lp.DeletedOnLoser, lp.WrittenOnWinner, lp.DeletedOnWinner, lp.KeptNearSplit} {
		sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	}
	sort.Slice(lp.Decisions, func(i, j int) bool { return lp.Decisions[i].ID < lp.Decisions[j].ID })
}

// getRows reads rows of the given ids from node's local copy.
func (cl *Cluster) getRows(ctx context.Context, node, tab string, ids []string) ([]backends.Row, error) {
	var rows []backends.Row
	const chunk = 1000
	for start := 0; start < len(ids); start += chunk {
		r, err := cl.api().GetRows(ctx, node, tab, ids[start:min(start+chunk, len(ids))])
		if err != nil {
			return nil, err
		}
		for _, x := range r {
			rows = append(rows, backends.Row{ID: x.ID, Blob: x.Blob})
		}
	}
	return rows, nil
}

// MergeResult counts what the merge did for one table.
type MergeResult struct {
	Table   string `json:"table"`
	Written int    `json:"written"`
	// Skipped: loser rows not written because the healed cluster had a
	// newer one by the time of the merge (decisions without evidence).
	Skipped int `json:"skipped"`
	Deleted int `json:"deleted"`
	// Kept: deletions not applied because the row was rewritten after the
	// split (decisions without evidence).
	Kept int `json:"kept"`
	// WinnerChanged: decisions made on evidence (the loser's write or
	// deletion was the later change) that were not applied because the
	// winner changed the key after the decision, while the heal ran: that
	// change is the later one, and the winner's row (or its absence)
	// stands. WinnerChangedIDs lists those keys.
	WinnerChanged    int      `json:"winner_changed"`
	WinnerChangedIDs []string `json:"winner_changed_ids,omitempty"`
}

// api is the typed stub of migctl_cluster (erl/agentapi).
func (cl *Cluster) api() agentapi.Cluster { return agentapi.Cluster{C: cl.c} }

// mergeCond is the condition of one change (migctl_cluster:merge/3): for a
// decision on evidence the winner's digest and the merge node's record
// time in µs (-1: that record was not read), else the inference rules.
func mergeCond(d Decision, ok bool) agentapi.MergeCond {
	if !ok || !d.Evidence {
		return agentapi.MergeCond{}
	}
	c := agentapi.MergeCond{Evidence: true, WinnerDigest: d.WinnerDigest, WinnerSeenUs: -1}
	switch {
	case d.WinnerSeenUs != nil:
		c.WinnerSeenUs = *d.WinnerSeenUs
	case d.WinnerSeen != nil && *d.WinnerSeen > 0:
		// A plan of an earlier migctl: a change in the same millisecond
		// as the one seen counts as seen, as it did then.
		c.WinnerSeenUs = *d.WinnerSeen*1000 + 999
	case d.WinnerSeen != nil:
		c.WinnerSeenUs = 0
	}
	return c
}

// merge applies the loser's changes on node in batches, each one
// transaction that re-checks every decision against the current row
// (migctl_cluster:merge/3): decisions made on evidence apply while the
// winner has not changed the key since (its row, and node's change
// record; see Decision.WinnerSeen), the others by last_accessed and
// write time. node must be the winner's Rep, whose record the decisions
// carry.
func (cl *Cluster) merge(ctx context.Context, node, tab string, writes []backends.Row, deletes []string, before int64, dec map[string]Decision) (MergeResult, error) {
	res := MergeResult{Table: tab}
	cond := func(id string) agentapi.MergeCond {
		d, ok := dec[id]
		return mergeCond(d, ok)
	}
	const batch = 500
	for start := 0; start < max(len(writes), len(deletes)); start += batch {
		var ws []agentapi.MergeWrite
		var ds []agentapi.MergeDelete
		if start < len(writes) {
			for _, r := range writes[start:min(start+batch, len(writes))] {
				ws = append(ws, agentapi.MergeWrite{ID: r.ID, Blob: r.Blob, Cond: cond(string(r.ID))})
			}
		}
		if start < len(deletes) {
			for _, id := range deletes[start:min(start+batch, len(deletes))] {
				ds = append(ds, agentapi.MergeDelete{ID: []byte(id), Before: before, Cond: cond(id)})
			}
		}
		r, err := cl.api().Merge(ctx, node, tab, ws, ds)
		if err != nil {
			return res, err
		}
		res.Written += r.Written
		res.Skipped += r.Skipped
		res.Deleted += r.Deleted
		res.Kept += r.Kept
		res.WinnerChanged += r.WinnerChanged
		res.WinnerChangedIDs = append(res.WinnerChangedIDs, r.WinnerChangedIDs...)
	}
	return res, nil
}

// downRecord is one node's record of when Mnesia on a peer went down.
type downRecord struct {
	Node, Peer string
	Millis     int64 // ms since the epoch (start of the second when Resolution is 1000)
	Resolution int64 // ms: 1 (seen by a watch forwarder) or 1000 (Mnesia's own record)
}

func (d downRecord) describe() string {
	if d.Resolution <= 1 {
		return fmt.Sprintf("mnesia_down of %s seen on %s at %s by the watch's event forwarder", d.Peer, d.Node, msTime(d.Millis))
	}
	return fmt.Sprintf("mnesia_down of %s recorded by Mnesia on %s at %s (to the second; start of that second)", d.Peer, d.Node, msTime(d.Millis))
}

func msTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

// downs reads, on every node of both islands, when it last saw Mnesia on
// a node of the other island go down (migctl_cluster:downs/1). Nodes that
// cannot be read contribute nothing.
func (cl *Cluster) downs(ctx context.Context, a, b []string) []downRecord {
	nodes := append(slices.Clone(a), b...)
	res := make([][]downRecord, len(nodes))
	forEach(nodes, func(i int, n string) {
		peers := b
		if i >= len(a) {
			peers = a
		}
		ds, err := cl.api().Downs(ctx, n, peers)
		if err != nil {
			cl.log.Debug("plan: no mnesia_down records", "node", n, "err", err)
			return
		}
		for _, d := range ds {
			res[i] = append(res[i], downRecord{Node: n, Peer: d.Peer, Millis: d.Millis, Resolution: d.Resolution})
		}
	})
	var out []downRecord
	for _, r := range res {
		out = append(out, r...)
	}
	return out
}

// splitFromDowns picks the split time from the mnesia_down records: the
// earliest record of this split (records that end before the data's
// bound are from an earlier outage), exact ones (a watch saw the event)
// before Mnesia's own, which are to the second. Every node notices the
// split at or after it happened, so an exact record is an upper bound of
// the split: taking it errs on the side of a deletion standing.
func splitFromDowns(ds []downRecord, lower int64) (downRecord, bool) {
	var best downRecord
	found := false
	for _, d := range ds {
		if d.Millis+max(d.Resolution, 1) <= lower {
			continue
		}
		better := !found ||
			(d.Resolution < best.Resolution) ||
			(d.Resolution == best.Resolution && d.Millis < best.Millis)
		if better {
			best, found = d, true
		}
	}
	return best, found
}
