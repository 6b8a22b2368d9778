package consistency

import (
	"time"

	"github.com/erlmcp/migctl/journal"
)

// CheckRecord is the journal body of a check: its report (samples
// included, not every difference) and who ran it.
type CheckRecord struct {
	Origin string  `json:"origin"` // "cli" or "monitor:NAME"
	Report *Report `json:"report"`
}

// RecordCheck appends a check to the journal and returns its sequence.
func RecordCheck(j *journal.Journal, rep *Report, origin string) (uint64, error) {
	return j.Append(EntryCheck, "", CheckRecord{Origin: origin, Report: rep})
}

// HistoryEntry is one past run: a check, a repair or an undo.
type HistoryEntry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Origin string    `json:"origin,omitempty"`
	Reason string    `json:"reason,omitempty"`
	User   string    `json:"user,omitempty"`
	// Check holds a check's report; Repair a repair's record.
	Check  *Report        `json:"check,omitempty"`
	Repair *RepairRecord  `json:"repair,omitempty"`
	Undo   map[string]any `json:"undo,omitempty"`
}

// History lists past checks, repairs and undos, oldest first; limit > 0
// keeps the newest limit.
func History(j *journal.Journal, limit int) ([]HistoryEntry, error) {
	es, err := j.List("", 0)
	if err != nil {
		return nil, err
	}
	var out []HistoryEntry
	for _, e := range es {
		h := HistoryEntry{Seq: e.Seq, Time: e.Time, Kind: e.Kind, Reason: e.Reason, User: e.User}
		switch e.Kind {
		case EntryCheck:
			var r CheckRecord
			if e.Decode(&r) != nil {
				continue
			}
			h.Origin, h.Check = r.Origin, r.Report
		case EntryRepair:
			var r RepairRecord
			if e.Decode(&r) != nil {
				continue
			}
			h.Repair = &r
		case EntryUndo:
			if e.Decode(&h.Undo) != nil {
				continue
			}
		default:
			continue
		}
		out = append(out, h)
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
