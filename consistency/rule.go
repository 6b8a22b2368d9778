package consistency

import (
	"fmt"
	"math"
	"time"

	"github.com/erlmcp/migctl/session"
)

// Rule is THE COMPARISON RULE (see the package documentation): what is
// compared exactly, what with a tolerance, and when a session counts as
// expired and is skipped. The field-by-field comparison is session.Equal.
type Rule struct {
	// LastAccessedTolerance: copies whose last_accessed differ by at most
	// this much are equal. Zero means the default
	// (DefaultLastAccessedTolerance); a negative value ignores
	// last_accessed altogether (phase1 when the hybrid does not mirror the
	// old store's read-touches to the new one).
	LastAccessedTolerance time.Duration
	// ExpiryGrace widens "expired" by this much so that a session expiring
	// while the check runs, which each store deletes on its own timer, is
	// skipped rather than reported. Default 5 s.
	ExpiryGrace time.Duration
}

// DefaultLastAccessedTolerance is the default Rule.LastAccessedTolerance,
// session.DefaultCompareOptions' slack: twice erlmcp's cleanup interval,
// longer than a dual write's lag, short against session timeouts (30 min
// to 24 h), so a lost touch that would expire a session early is caught.
var DefaultLastAccessedTolerance = session.DefaultCompareOptions().LastAccessedSlack

func (r Rule) withDefaults() Rule {
	if r.LastAccessedTolerance == 0 {
		r.LastAccessedTolerance = DefaultLastAccessedTolerance
	}
	if r.ExpiryGrace == 0 {
		r.ExpiryGrace = 5 * time.Second
	}
	return r
}

// toleranceMs is the tolerance in ms, 0 when last_accessed is ignored.
func (r Rule) toleranceMs() int64 {
	if r.LastAccessedTolerance < 0 {
		return 0
	}
	return r.LastAccessedTolerance.Milliseconds()
}

func (r Rule) compareOptions() session.CompareOptions {
	o := session.DefaultCompareOptions()
	o.MaxChanges = 4
	if r.LastAccessedTolerance < 0 {
		o.LastAccessedSlack = time.Duration(math.MaxInt64)
	} else {
		o.LastAccessedSlack = r.LastAccessedTolerance
	}
	return o
}

// verdict is the outcome of comparing two copies of one id.
type verdict int

const (
	vMatch verdict = iota
	vExpired
	vMismatch
	vMissing // in source only
	vExtra   // in target only
)

// judge applies the rule to the two copies (nil: absent). diff is a short
// readable description of a difference; newer says which copy is newer
// ("source", "target" or "" when equal or unknown).
func (r Rule) judge(src, tgt []byte, now time.Time) (v verdict, diff, newer string) {
	nowMs := now.Add(r.ExpiryGrace).UnixMilli()
	switch {
	case src == nil && tgt == nil:
		return vMatch, "", ""
	case tgt == nil:
		if s, err := session.Parse(src); err == nil && s.Expired(nowMs) {
			return vExpired, "", "source"
		}
		return vMissing, "absent in target", "source"
	case src == nil:
		if s, err := session.Parse(tgt); err == nil && s.Expired(nowMs) {
			return vExpired, "", "target"
		}
		return vExtra, "absent in source", "target"
	}
	ss, err1 := session.Parse(src)
	ts, err2 := session.Parse(tgt)
	if err1 == nil && err2 == nil {
		// The newest copy decides expiry: an older copy that expired while
		// the newer did not is a lost touch, which the tolerance catches.
		nc := ss
		switch {
		case session.Newer(ss, ts):
			newer = "source"
		case session.Newer(ts, ss):
			newer, nc = "target", ts
		}
		if nc.Expired(nowMs) {
			return vExpired, "", newer
		}
	}
	eq, d := session.Equal(src, tgt, r.compareOptions())
	if eq {
		return vMatch, "", newer
	}
	if d.Empty() {
		return vMismatch, fmt.Sprintf("undecodable: %v / %v", err1, err2), newer
	}
	return vMismatch, d.String(), newer
}
