package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	Wait time.Duration
	// WatchTTL ends the node's persistence watch by itself this long after
	// it began, should migctl die half-way (default 1 h, at least 4 x Wait).
	WatchTTL time.Duration
	Reason   string
}

// Snapshot is a store's count and content checksum.
type Snapshot struct {
	Count int64  `json:"count"`
	Sum   uint64 `json:"checksum"`
}

// Methods of VerifyPersistence.
const (
	// PersistPerSession judges every session no client touched during the
	// verification (the hybrid backend's persistence watch says which).
	PersistPerSession = "per_session"
	// PersistWholeStore compares the whole store's count and checksum: a
	// node without the hybrid backend; the application must be quiet.
	PersistWholeStore = "whole_store"
)

// PersistSessions is the per-session verdict. Every session the snapshot
// before the restart or the one after it holds is either touched (a client
// stored, fetched or deleted it between the first snapshot and the end of
// the comparison: not judged), expired (absent after the restart, and past
// its timeout: erlmcp deletes those itself), or judged: restored (present,
// same value, last_accessed included), lost (absent), changed (another
// value) or appeared (present after, absent before).
type PersistSessions struct {
	Compared int64 `json:"compared"`
	Restored int64 `json:"restored"`
	Lost     int64 `json:"lost"`
	Changed  int64 `json:"changed"`
	Appeared int64 `json:"appeared"`
	Touched  int64 `json:"touched"`
	Expired  int64 `json:"expired"`
	// Up to PersistSampleIDs ids of each kind of failure, sorted.
	LostIDs     []string `json:"lost_ids,omitempty"`
	ChangedIDs  []string `json:"changed_ids,omitempty"`
	AppearedIDs []string `json:"appeared_ids,omitempty"`
}

// PersistSampleIDs is how many ids of each failure a report names.
const PersistSampleIDs = 10

// PersistReport is VerifyPersistence's answer.
type PersistReport struct {
	Node     string   `json:"node"`
	Store    string   `json:"store"`
	Before   Snapshot `json:"before"`
	After    Snapshot `json:"after"`
	Restored bool     `json:"restored"`
	Seconds  float64  `json:"restart_seconds"`
	Seq      uint64   `json:"seq,omitempty"`
	// Method is PersistPerSession or PersistWholeStore.
	Method string `json:"method"`
	// Sessions: the per-session verdict (PersistPerSession).
	Sessions *PersistSessions `json:"sessions,omitempty"`
	// Note says what the result does not cover, or what to do.
	Note string `json:"note,omitempty"`
}

// Lines is the report in words, after the before/after table: the
// per-session counts, the sample ids and the note.
func (r *PersistReport) Lines() []string {
	var out []string
	if s := r.Sessions; s != nil {
		out = append(out, fmt.Sprintf("sessions: %d compared, %d restored, %d lost, %d changed, %d appeared; %d touched by clients (not judged), %d expired",
			s.Compared, s.Restored, s.Lost, s.Changed, s.Appeared, s.Touched, s.Expired))
		for _, l := range []struct {
			what string
			ids  []string
			n    int64
		}{{"lost", s.LostIDs, s.Lost}, {"changed", s.ChangedIDs, s.Changed}, {"appeared", s.AppearedIDs, s.Appeared}} {
			if len(l.ids) > 0 {
				out = append(out, fmt.Sprintf("%s: %s%s", l.what, strings.Join(l.ids, " "), more(l.n, len(l.ids))))
			}
		}
	}
	if r.Note != "" {
		out = append(out, "note: "+r.Note)
	}
	return out
}

func more(n int64, shown int) string {
	if n > int64(shown) {
		return fmt.Sprintf(" (and %d more)", n-int64(shown))
	}
	return ""
}

// VerifyPersistence is the runbook's "restart the node, sessions restored"
// for ETS → DETS. It restarts the node with o.Restart and checks the DETS
// store before and after.
//
// With the hybrid backend on the node (the runbook's case) it works under
// live traffic. It turns the backend's persistence watch on (from then on
// the node records, in a small DETS file next to the data that the restart
// keeps, the id of every session a client stores, fetches or deletes),
// takes a digest of every session (the keys listed in one turn of the
// store server, so none is missed), restarts the node, waits for the store
// and for the watch to be back, takes the digests again, reads the touched
// ids and turns the watch off. Every session not touched must be back with
// the same value, last_accessed included (only a fetch changes it, and a
// fetch is a touch); any lost, changed or appeared one is a persistence
// failure (restored=false, ErrVerify). If the watch did not survive the
// restart (another dets_dir, the node came back without the hybrid, a
// failure), the report says so and judges every session: with traffic on,
// differences may then be the clients'.
//
// Without the hybrid (plain erlmcp_session_dets after the migration) it
// compares the store's count and checksum (ids and values without
// last_accessed) as before: run it with the application quiet.
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
	if o.WatchTTL <= 0 {
		o.WatchTTL = max(time.Hour, 4*o.Wait)
	}
	if o.Restart == nil {
		return nil, fmt.Errorf("verify persistence: no restart command (--restart-cmd)")
	}
	rep := &PersistReport{Node: o.Node, Store: o.Store.String()}
	ns := m.nodeStatus(ctx, o.Node)
	if !ns.Reachable {
		return rep, fmt.Errorf("%w: %s: %s", ErrNodeDown, o.Node, ns.Error)
	}
	if ns.Installed && o.Store.Kind == backends.KindDETS {
		token := newToken()
		err := m.api().PersistWatchOn(ctx, o.Node, token, o.WatchTTL)
		switch {
		case err == nil:
			return m.verifyPerSession(ctx, o, rep, token)
		case isReason(err, "hybrid_without_watch"):
			rep.Note = "the node's migctl_node library predates the persistence watch (upgrade it to verify under traffic): "
		default:
			return rep, fmt.Errorf("verify persistence: turning the persistence watch on: %w", err)
		}
	} else if !ns.Installed {
		rep.Note = "the node does not run the hybrid backend: "
	}
	rep.Note += "compared the whole store's count and checksum; sessions clients wrote or deleted meanwhile count as differences, so run it with the application quiet"
	return m.verifyWholeStore(ctx, o, rep)
}

// verifyWholeStore is the comparison of count and checksum.
func (m *Migrator) verifyWholeStore(ctx context.Context, o PersistOptions, rep *PersistReport) (*PersistReport, error) {
	rep.Method = PersistWholeStore
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
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return rep, err
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	rep.Restored = rep.Before == rep.After
	rep.Seq, _ = m.j.Append(KindPersistence, o.Reason, rep)
	if !rep.Restored {
		return rep, fmt.Errorf("%w: before the restart %d sessions (checksum %x), after %d (%x) (%s)", ErrVerify,
			rep.Before.Count, rep.Before.Sum, rep.After.Count, rep.After.Sum, rep.Note)
	}
	return rep, nil
}

// persistEntry is one session of a snapshot.
type persistEntry struct {
	digest  uint64
	expires int64 // node time in ms; 0: never
}

// persistSnap is a per-session snapshot: key (kind byte + id bytes) →
// entry, and the node's clock when the values had been read.
type persistSnap struct {
	rows map[string]persistEntry
	at   int64
}

func (s persistSnap) summary() Snapshot {
	out := Snapshot{Count: int64(len(s.rows))}
	for _, e := range s.rows {
		out.Sum += e.digest
	}
	return out
}

// touchedSet is what the watch recorded.
type touchedSet struct {
	on      bool
	why     string // on == false: why the watch ended
	ids     map[string]bool
	cleanup bool
	unclean bool
	resumed bool
}

func (m *Migrator) verifyPerSession(ctx context.Context, o PersistOptions, rep *PersistReport, token string) (*PersistReport, error) {
	rep.Method = PersistPerSession
	defer func() {
		// Whatever happened, the watch ends (it would end by itself after
		// WatchTTL): with a context of its own, ctx may be done.
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.api().PersistWatchOff(c, o.Node, token); err != nil {
			m.log.Warn("verify persistence: turning the watch off (it ends by itself later)", "node", o.Node, "ttl", o.WatchTTL, "err", err)
		}
	}()
	table := o.Store.Table
	before, err := m.persistSnapshot(ctx, o.Node, table, "door")
	if err != nil {
		return rep, fmt.Errorf("verify persistence: snapshot before the restart: %w", err)
	}
	rep.Before = before.summary()
	t0 := time.Now()
	if err := o.Restart(ctx); err != nil {
		return rep, fmt.Errorf("restart: %w", err)
	}
	// Wait for the store and for the watch: until the store server that
	// answers has reopened the watch (resumed), the node has not restarted
	// yet (a restart command may return before it does), and a snapshot
	// would be of the old store.
	var after persistSnap
	var touched touchedSet
	deadline := time.Now().Add(o.Wait)
	for {
		done, err := m.afterRestart(ctx, o.Node, table, token, &after, &touched)
		if done {
			if err != nil {
				return rep, err
			}
			break
		}
		if time.Now().After(deadline) {
			why := "the store did not answer"
			if err != nil {
				why = err.Error()
			}
			return rep, fmt.Errorf("%w: %s did not come back with its store within %s (%s)", ErrNodeDown, o.Node, o.Wait, why)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return rep, err
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	rep.After = after.summary()
	rep.Sessions = judgePersistence(before, after, touched)
	rep.Restored = rep.Sessions.Lost+rep.Sessions.Changed+rep.Sessions.Appeared == 0
	rep.Note = persistNote(touched, rep.Sessions)
	rep.Seq, _ = m.j.Append(KindPersistence, o.Reason, rep)
	if !rep.Restored {
		s := rep.Sessions
		msg := fmt.Sprintf("%d of %d sessions that no client touched are not as they were before the restart: %d lost, %d changed, %d appeared",
			s.Lost+s.Changed+s.Appeared, s.Compared, s.Lost, s.Changed, s.Appeared)
		for _, l := range rep.Lines()[1:] {
			msg += "; " + l
		}
		return rep, fmt.Errorf("%w: %s", ErrVerify, msg)
	}
	return rep, nil
}

// afterRestart is one try at the state after the restart. done: the
// snapshot and the touched set are in (or err says why they never will be).
func (m *Migrator) afterRestart(ctx context.Context, node, table, token string, after *persistSnap, touched *touchedSet) (done bool, err error) {
	if err := m.c.Connect(ctx, node); err != nil {
		return false, err
	}
	ns := m.nodeStatus(ctx, node)
	if ns.Backend == "" {
		return false, errors.New(ns.Error)
	}
	if !ns.Installed {
		// A store server that was still starting answers the status'
		// question only after its init: asked again, a hybrid says so.
		if ns = m.nodeStatus(ctx, node); ns.Backend == "" {
			return false, errors.New(ns.Error)
		}
	}
	if !ns.Installed {
		*touched = touchedSet{why: "the node came back without the hybrid backend (" + ns.Backend + ")"}
		*after, err = m.persistSnapshot(ctx, node, table, "direct")
		return err == nil, err
	}
	how := "door"
	t, err := m.persistTouched(ctx, node, token)
	switch {
	case isReason(err, "hybrid_without_watch"):
		t = touchedSet{why: "the node came back with a migctl_node library without the persistence watch"}
		*touched, how = t, "direct"
	case err != nil:
		return false, err
	case t.on && !t.resumed:
		return false, errors.New("the store server still runs the watch begun before the restart: the node has not restarted (yet)")
	case !t.on:
		*touched = t
	}
	if *after, err = m.persistSnapshot(ctx, node, table, how); err != nil {
		return false, err
	}
	if !t.on {
		return true, nil
	}
	// The touched set is read after the snapshot: whatever changed a
	// session before its value was read is in it.
	if *touched, err = m.persistTouched(ctx, node, token); err != nil {
		return false, err
	}
	return true, nil
}

// persistSnapshot reads one digest per session of the DETS table (how:
// "door", keys listed by the store server; "direct", a traversal).
func (m *Migrator) persistSnapshot(ctx context.Context, node, table, how string) (persistSnap, error) {
	snap, err := m.api().PersistSnapshot(ctx, node, table, how, time.Minute)
	if err != nil {
		return persistSnap{}, err
	}
	out := persistSnap{rows: make(map[string]persistEntry, len(snap.Rows)), at: snap.At}
	for id, d := range snap.Rows {
		out.rows[id] = persistEntry{digest: d.Digest, expires: d.ExpiresAt}
	}
	return out, nil
}

func (m *Migrator) persistTouched(ctx context.Context, node, token string) (touchedSet, error) {
	t, err := m.api().PersistTouched(ctx, node, token, time.Minute)
	if err != nil {
		return touchedSet{}, err
	}
	if !t.On {
		return touchedSet{why: watchEnded(t.Why)}, nil
	}
	return touchedSet{on: true, ids: t.IDs, cleanup: t.Cleanup, unclean: t.Unclean, resumed: t.Resumed}, nil
}

func watchEnded(why string) string {
	switch why {
	case "expired":
		return "the persistence watch expired (--wait, or the restart, took longer than its TTL)"
	case "failed":
		return "the persistence watch failed on the node (its file could not be written or reopened: see the node's log)"
	case "replaced":
		return "another verify persistence began a watch of its own on the node meanwhile"
	case "none":
		return "the node came back without the watch's file (migctl_touched.dets in dets_dir: another dets_dir, or the file was removed)"
	}
	return "the persistence watch ended (" + why + ")"
}

// judgePersistence compares the snapshots. touched.on == false: nobody
// knows what clients touched, every session is judged.
func judgePersistence(before, after persistSnap, touched touchedSet) *PersistSessions {
	s := &PersistSessions{Touched: int64(len(touched.ids))}
	var lost, changed, appeared []string
	for id, b := range before.rows {
		if touched.ids[id] {
			continue
		}
		a, ok := after.rows[id]
		switch {
		case !ok && b.expires != 0 && b.expires < after.at:
			s.Expired++
		case !ok:
			lost = append(lost, id)
		case a.digest != b.digest:
			changed = append(changed, id)
		default:
			s.Restored++
		}
	}
	for id := range after.rows {
		if _, ok := before.rows[id]; !ok && !touched.ids[id] {
			appeared = append(appeared, id)
		}
	}
	s.Lost, s.Changed, s.Appeared = int64(len(lost)), int64(len(changed)), int64(len(appeared))
	s.Compared = s.Restored + s.Lost + s.Changed + s.Appeared
	s.LostIDs, s.ChangedIDs, s.AppearedIDs = sampleIDs(lost), sampleIDs(changed), sampleIDs(appeared)
	return s
}

func sampleIDs(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	out := make([]string, 0, min(len(ids), PersistSampleIDs))
	for _, id := range ids[:min(len(ids), PersistSampleIDs)] {
		out = append(out, showID(id))
	}
	return out
}

// showID prints a snapshot key: a printable binary id as it is, anything
// else in hex (a non-binary id: term_to_binary, prefixed "term:").
func showID(key string) string {
	if key == "" {
		return key
	}
	id := key[1:]
	if key[0] != 0 {
		return "term:" + hex.EncodeToString([]byte(id))
	}
	if utf8.ValidString(id) && strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) < 0 {
		return id
	}
	return "hex:" + hex.EncodeToString([]byte(id))
}

func persistNote(t touchedSet, s *PersistSessions) string {
	var parts []string
	if !t.on {
		parts = append(parts, t.why+": which sessions clients changed meanwhile is not known, so every session was judged; with traffic on, differences may be the clients'; run it again with the application quiet, or fix the cause")
	}
	if t.unclean {
		parts = append(parts, "the node was not stopped gracefully (the watch's DETS file was repaired): a session changed in its last seconds may be missing from the touched set, and the DETS store itself may have lost those seconds; restart it with a clean stop to verify")
	}
	if t.cleanup && s.Expired > 0 {
		parts = append(parts, fmt.Sprintf("the store's expiry cleanup ran meanwhile: %d expired sessions gone are not failures", s.Expired))
	}
	return strings.Join(parts, "; ")
}

func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
