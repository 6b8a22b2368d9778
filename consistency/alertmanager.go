package consistency

import (
	"fmt"
	"strings"
	"time"

	"github.com/erlmcp/migctl/alerting"
)

// AlertName is the alertname of the monitor's own alerts (deploy/'s
// Prometheus rules fire MigctlConsistencyMismatches; this one comes from
// the monitor itself, labelled sender="migctl-monitor").
const AlertName = "MigctlConsistencyMismatch"

// MismatchAlert is what the monitor reports once for the mismatches a
// check found that no earlier check had (across restarts too).
type MismatchAlert struct {
	// Monitor is the monitor's name (MonitorConfig.Name).
	Monitor string
	// Source and Target name the stores as the report does.
	Source, Target string
	// Check is the check's sequence number in the journal (consistency
	// history); 0 if it could not be recorded.
	Check uint64
	// Fresh are the new mismatches; Counts counts them by kind.
	Fresh  []Difference
	Counts map[Kind]int
	// At is when the monitor saw them.
	At time.Time
}

func newMismatchAlert(monitor string, rep *Report, fresh []Difference, seq uint64) MismatchAlert {
	counts := map[Kind]int{}
	for _, d := range fresh {
		counts[d.Kind]++
	}
	return MismatchAlert{Monitor: monitor, Source: rep.Source, Target: rep.Target, Check: seq,
		Fresh: fresh, Counts: counts, At: time.Now().UTC()}
}

// Summary is the alert's one line.
func (a MismatchAlert) Summary() string {
	return fmt.Sprintf("%d new session mismatch(es) between %s and %s", len(a.Fresh), a.Source, a.Target)
}

// First describes the first ten mismatches: kind, id, diff.
func (a MismatchAlert) First() []string {
	var ids []string
	for _, d := range a.Fresh {
		if len(ids) == 10 {
			break
		}
		ids = append(ids, fmt.Sprintf("%s %q (%s)", d.Kind, d.ID, d.Diff))
	}
	return ids
}

// Alertmanager is the alert in Alertmanager's format. generatorURL is
// where the alert came from (the monitor's /metrics), "" if none. The
// labels are what deploy/'s routes and the runbook match on: alertname,
// severity=critical, sender=migctl-monitor, monitor, source_store,
// target_store, check.
func (a MismatchAlert) Alertmanager(generatorURL string) alerting.Alert {
	return alerting.Alert{
		Labels: map[string]string{"alertname": AlertName, "severity": "critical", "sender": "migctl-monitor",
			"monitor": a.Monitor, "source_store": a.Source, "target_store": a.Target, "check": fmt.Sprint(a.Check)},
		Annotations: map[string]string{"summary": a.Summary(),
			"description": fmt.Sprintf("mismatched %d, missing in target %d, extra in target %d; %s. `migctl consistency history` has the check, `migctl consistency repair --dry-run` shows a fix.",
				a.Counts[KindMismatched], a.Counts[KindMissingInTarget], a.Counts[KindExtraInTarget], strings.Join(a.First(), "; "))},
		StartsAt:     a.At,
		GeneratorURL: generatorURL,
	}
}
