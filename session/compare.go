package session

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/erlmcp/migctl/term"
)

// DefaultCleanupInterval is erlmcp's default session_cleanup_interval: how
// often each backend deletes its expired sessions.
const DefaultCleanupInterval = 60 * time.Second

// CompareOptions tunes Equal.
type CompareOptions struct {
	// LastAccessedSlack is how far last_accessed may differ between two
	// copies that are still considered the same session. Every fetch
	// rewrites last_accessed, so copies in two stores drift apart by up to
	// the time between the writes reaching each store; 2 × the cleanup
	// interval is a sensible choice (DefaultCompareOptions). Zero demands
	// equality.
	LastAccessedSlack time.Duration
	// MaxChanges caps how many changes the Diff lists (default 8); the
	// rest are counted.
	MaxChanges int
}

// DefaultCompareOptions allows last_accessed to drift by twice the default
// cleanup interval.
func DefaultCompareOptions() CompareOptions {
	return CompareOptions{LastAccessedSlack: 2 * DefaultCleanupInterval}
}

// Change is one difference between two copies of a session, rendered for
// humans with long values truncated.
type Change struct {
	// Path names the field: "id", "timeout_ms", "last_accessed", or a
	// metadata entry such as metadata.<<"user">> (nested maps add more
	// .Key steps). "blob" is used when a side is not a session at all.
	Path string
	// A and B render the values in Erlang syntax; "" means the side has
	// no such field (e.g. a metadata key was added or removed).
	A, B string
	// Detail, when set, replaces the "A → B" rendering, e.g. "+1200ms".
	Detail string
}

func (c Change) String() string {
	if c.Detail != "" {
		return c.Path + ": " + c.Detail
	}
	a, b := c.A, c.B
	if a == "" {
		a = "(absent)"
	}
	if b == "" {
		b = "(absent)"
	}
	return c.Path + ": " + a + " → " + b
}

// Diff lists the changes that make two copies of a session unequal, in a
// stable order (id, created_at, last_accessed, timeout_ms, metadata, other
// keys). Omitted counts changes past CompareOptions.MaxChanges.
type Diff struct {
	Changes []Change
	Omitted int
}

// String renders the diff on one line, e.g.
//
//	metadata.<<"user">>: <<"a">> → <<"b">>; last_accessed: +1200ms
func (d Diff) String() string {
	parts := make([]string, 0, len(d.Changes)+1)
	for _, c := range d.Changes {
		parts = append(parts, c.String())
	}
	if d.Omitted > 0 {
		parts = append(parts, fmt.Sprintf("… and %d more", d.Omitted))
	}
	return strings.Join(parts, "; ")
}

// Empty reports whether there is no difference.
func (d Diff) Empty() bool { return len(d.Changes) == 0 && d.Omitted == 0 }

// Equal is the consistency checker's rule for two blobs of the same session
// from two stores: equal when every field but last_accessed holds the same
// term, and last_accessed differs by at most opts.LastAccessedSlack. Terms,
// not bytes, are compared (identical bytes are a fast path), so a
// compressed copy or a large metadata map written in another node's order
// still counts as equal. When they are not equal the Diff says why; it is
// empty when they are equal, even if last_accessed drifted within the
// slack. A blob that is not a session never equals anything.
func Equal(a, b []byte, opts CompareOptions) (bool, Diff) {
	if bytes.Equal(a, b) {
		if _, err := Parse(a); err != nil {
			return false, notSessions(err, err)
		}
		return true, Diff{}
	}
	sa, errA := Parse(a)
	sb, errB := Parse(b)
	if errA != nil || errB != nil {
		return false, notSessions(errA, errB)
	}
	d := differ{max: opts.MaxChanges}
	if d.max <= 0 {
		d.max = 8
	}
	if !bytes.Equal(sa.ID, sb.ID) {
		d.add(Change{Path: "id", A: short(term.Binary(sa.ID)), B: short(term.Binary(sb.ID))})
	}
	if sa.CreatedAt != sb.CreatedAt {
		d.add(Change{Path: "created_at", A: fmt.Sprint(sa.CreatedAt), B: fmt.Sprint(sb.CreatedAt),
			Detail: fmt.Sprintf("%s → %s (%+dms)", fmt.Sprint(sa.CreatedAt), fmt.Sprint(sb.CreatedAt), sb.CreatedAt-sa.CreatedAt)})
	}
	if drift := sb.LastAccessed - sa.LastAccessed; abs(drift) > opts.LastAccessedSlack.Milliseconds() {
		d.add(Change{Path: "last_accessed", A: fmt.Sprint(sa.LastAccessed), B: fmt.Sprint(sb.LastAccessed),
			Detail: fmt.Sprintf("%+dms (slack %dms)", drift, opts.LastAccessedSlack.Milliseconds())})
	}
	if ta, tb := timeoutTerm(sa), timeoutTerm(sb); !term.Equal(ta, tb) {
		d.add(Change{Path: "timeout_ms", A: short(ta), B: short(tb)})
	}
	d.terms("metadata", sa.Metadata, sb.Metadata, 0)
	d.maps("", sa.Extra, sb.Extra, 0)
	return d.diff.Empty(), d.diff
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func timeoutTerm(s Session) term.Term {
	if s.Infinite {
		return term.Atom("infinity")
	}
	return s.TimeoutMs
}

func notSessions(errA, errB error) Diff {
	var d Diff
	for _, side := range []struct {
		name string
		err  error
	}{{"a", errA}, {"b", errB}} {
		if side.err != nil {
			d.Changes = append(d.Changes, Change{Path: "blob", Detail: side.name + ": " + truncate(side.err.Error(), 160)})
		}
	}
	return d
}

type differ struct {
	diff Diff
	max  int
}

func (d *differ) add(c Change) {
	if len(d.diff.Changes) < d.max {
		d.diff.Changes = append(d.diff.Changes, c)
	} else {
		d.diff.Omitted++
	}
}

// maxDiffDepth is how deep Diff descends into nested metadata maps before
// reporting a whole value as changed.
const maxDiffDepth = 4

// terms reports a change at path when a and b differ, descending into maps
// so that the change names the entry rather than all of metadata.
func (d *differ) terms(path string, a, b term.Term, depth int) {
	if term.Equal(a, b) {
		return
	}
	ma, okA := a.(term.Map)
	mb, okB := b.(term.Map)
	if okA && okB && depth < maxDiffDepth {
		d.maps(path, ma, mb, depth)
		return
	}
	d.add(Change{Path: path, A: short(a), B: short(b)})
}

// maps merges the two maps' entries in key order; path "" is the top level
// of the session (for extra keys).
func (d *differ) maps(path string, a, b term.Map, depth int) {
	if path != "" && len(a) == 0 && len(b) == 0 {
		return
	}
	byKey := func(p, q term.MapPair) int { return term.Compare(p.Key, q.Key) }
	a, b = slices.SortedFunc(slices.Values(a), byKey), slices.SortedFunc(slices.Values(b), byKey)
	sub := func(k term.Term) string {
		if path == "" {
			return short(k)
		}
		return path + "." + short(k)
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		c := 0
		switch {
		case i == len(a):
			c = 1
		case j == len(b):
			c = -1
		default:
			c = term.Compare(a[i].Key, b[j].Key)
		}
		switch {
		case c < 0:
			d.add(Change{Path: sub(a[i].Key), A: short(a[i].Value)})
			i++
		case c > 0:
			d.add(Change{Path: sub(b[j].Key), B: short(b[j].Value)})
			j++
		default:
			d.terms(sub(a[i].Key), a[i].Value, b[j].Value, depth+1)
			i++
			j++
		}
	}
}

// short renders a term for a diff line: Erlang syntax, small limits, and
// at most maxShort characters.
func short(t term.Term) string {
	return truncate(term.FormatOptions{MaxBinary: 40, MaxElems: 6, MaxDepth: 3}.Format(t), maxShort)
}

const maxShort = 80

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
