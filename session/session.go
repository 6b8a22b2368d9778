package session

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"unicode/utf8"

	"github.com/erlmcp/migctl/term"
)

// ErrNotSession is wrapped by every error Parse returns: the blob is not an
// erlmcp session value (not ETF at all, or a term of the wrong shape).
// migctl refuses to migrate a table whose values fail this test.
var ErrNotSession = errors.New("not an erlmcp session")

// Session is the decoded view of one session blob.
type Session struct {
	// ID is the session id. erlmcp generates 32 upper-case hex
	// characters, but callers may store any binary (UTF-8 ids are
	// supported), so nothing here assumes a shape.
	ID []byte
	// CreatedAt and LastAccessed are erlang:system_time(millisecond)
	// values.
	CreatedAt    int64
	LastAccessed int64
	// TimeoutMs is the idle timeout; it is meaningless when Infinite is
	// set (timeout_ms => infinity).
	TimeoutMs int64
	Infinite  bool
	// Metadata is the session's metadata map (keys are usually binaries
	// but may be any term).
	Metadata term.Map
	// Extra holds any keys besides the five above, so that a newer
	// erlmcp adding a field does not make sessions unreadable and Equal
	// still compares that field.
	Extra term.Map
	// Raw is the blob the session was parsed from (a private copy). It is
	// what migctl writes when copying the session.
	Raw []byte
}

// Parse decodes and validates a term_to_binary blob of a session. The
// returned Session owns its memory (the blob is copied once), so blob may be
// reused afterwards, e.g. when it comes from a bbolt transaction.
//
// Every error wraps ErrNotSession; decoding errors also wrap the
// *term.DecodeError that says where the blob is damaged.
func Parse(blob []byte) (Session, error) {
	raw := bytes.Clone(blob)
	// Decoding from our own copy lets the terms alias it instead of each
	// binary being copied again.
	t, err := term.DecodeOptions{NoCopy: true}.Decode(raw)
	if err != nil {
		return Session{}, fmt.Errorf("%w: %w", ErrNotSession, err)
	}
	m, ok := t.(term.Map)
	if !ok {
		return Session{}, notSession("the value is %s, not a map%s", kind(t), rowHint(t))
	}
	s := Session{Raw: raw}
	var seen [5]bool
	for _, p := range m {
		key, _ := p.Key.(term.Atom)
		i := -1
		switch key {
		case "id":
			i = 0
			id, ok := p.Value.(term.Binary)
			if !ok {
				return Session{}, notSession("id is %s, want a binary", describe(p.Value))
			}
			s.ID = id
		case "created_at":
			i = 1
			if s.CreatedAt, err = millis("created_at", p.Value); err != nil {
				return Session{}, err
			}
		case "last_accessed":
			i = 2
			if s.LastAccessed, err = millis("last_accessed", p.Value); err != nil {
				return Session{}, err
			}
		case "timeout_ms":
			i = 3
			if p.Value == term.Atom("infinity") {
				s.Infinite = true
			} else if s.TimeoutMs, err = millis("timeout_ms", p.Value); err != nil {
				return Session{}, notSession("timeout_ms is %s, want an integer or infinity", describe(p.Value))
			}
		case "metadata":
			i = 4
			md, ok := p.Value.(term.Map)
			if !ok {
				return Session{}, notSession("metadata is %s, want a map", describe(p.Value))
			}
			s.Metadata = md
		default:
			s.Extra = append(s.Extra, p)
		}
		if i >= 0 {
			seen[i] = true
		}
	}
	for i, name := range []string{"id", "created_at", "last_accessed", "timeout_ms", "metadata"} {
		if !seen[i] {
			return Session{}, notSession("the map has no %s key (keys: %s)", name, keyList(m))
		}
	}
	return s, nil
}

func notSession(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotSession, fmt.Sprintf(format, args...))
}

// millis accepts an integer that fits int64, as erlang:system_time/1 and
// timeouts always do.
func millis(field string, v term.Term) (int64, error) {
	switch n := v.(type) {
	case int64:
		return n, nil
	case *big.Int:
		return 0, notSession("%s is %s, outside the 64-bit range", field, term.Format(n))
	}
	return 0, notSession("%s is %s, want an integer", field, describe(v))
}

// rowHint recognises the table rows that wrap a session, a common mistake
// when pointing migctl at the wrong level of a table.
func rowHint(t term.Term) string {
	tup, ok := t.(term.Tuple)
	if !ok {
		return ""
	}
	switch {
	case len(tup) == 2:
		if _, ok := tup[1].(term.Map); ok {
			return " (it looks like an ETS/DETS row {SessionId, Session}; pass the session, the second element)"
		}
	case len(tup) == 4:
		if _, ok := tup[2].(term.Map); ok {
			return " (it looks like a Mnesia record {Table, SessionId, Session, WriteTime}; pass the third element)"
		}
	}
	return ""
}

// kind names a term's type the way an Erlang programmer would.
func kind(t term.Term) string {
	switch v := t.(type) {
	case int64, *big.Int:
		return "an integer"
	case float64:
		return "a float"
	case term.Atom:
		return "an atom"
	case term.Binary:
		return "a binary"
	case term.Bitstring:
		return "a bitstring"
	case term.Tuple:
		return fmt.Sprintf("a %d-tuple", len(v))
	case term.Nil, term.String, term.List:
		return "a list"
	case term.Map:
		return "a map"
	case term.Pid:
		return "a pid"
	case term.Ref:
		return "a reference"
	case term.Port:
		return "a port"
	case term.Export, term.Opaque:
		return "a fun"
	}
	return fmt.Sprintf("a %T", t)
}

// describe is kind plus a short rendering of the value.
func describe(t term.Term) string {
	return kind(t) + " " + short(t)
}

func keyList(m term.Map) string {
	keys := make(term.Tuple, 0, len(m))
	for _, p := range m {
		keys = append(keys, p.Key)
	}
	s := short(keys)
	return "[" + s[1:len(s)-1] + "]"
}

// Expired applies erlmcp's rule: a session expires when its timeout is not
// infinity and nowMs - last_accessed > timeout_ms. Equality is not expiry.
// The arithmetic is exact even for absurd values (Erlang integers do not
// overflow, so neither may this).
func (s Session) Expired(nowMs int64) bool {
	if s.Infinite {
		return false
	}
	const lim = 1 << 62 // no overflow possible below this
	if within(nowMs, lim) && within(s.LastAccessed, lim) && within(s.TimeoutMs, lim) {
		return nowMs-s.LastAccessed > s.TimeoutMs
	}
	elapsed := new(big.Int).Sub(big.NewInt(nowMs), big.NewInt(s.LastAccessed))
	return elapsed.Cmp(big.NewInt(s.TimeoutMs)) > 0
}

func within(v, lim int64) bool { return v > -lim && v < lim }

// Newer reports whether a was accessed more recently than b. Equal
// last_accessed values are a tie, and a tie is not newer.
func Newer(a, b Session) bool { return a.LastAccessed > b.LastAccessed }

// IDString renders the id for humans and logs: the text when it is valid
// UTF-8, otherwise "base64:" followed by the standard base64 encoding.
func (s Session) IDString() string {
	if utf8.Valid(s.ID) {
		return string(s.ID)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(s.ID)
}

// MarshalJSON renders a session for display (the CLI's --json output):
//
//	{"id": "…"                      when the id is valid UTF-8,
//	 "id_base64": "…"               otherwise (standard encoding), never both,
//	 "created_at": 1700000000000, "last_accessed": 1700000005000,
//	 "timeout_ms": 1800000 or "infinity",
//	 "metadata": "#{<<\"user\">> => …}"   the map in Erlang syntax,
//	 "extra": "#{…}"                  only when there are extra keys,
//	 "size": 512}                     bytes of Raw
//
// Metadata is rendered as Erlang text because ETF maps have keys and values
// JSON cannot express. The output is not meant to be read back: sessions
// travel as blobs.
func (s Session) MarshalJSON() ([]byte, error) {
	type out struct {
		ID           *string `json:"id,omitempty"`
		IDBase64     *string `json:"id_base64,omitempty"`
		CreatedAt    int64   `json:"created_at"`
		LastAccessed int64   `json:"last_accessed"`
		TimeoutMs    any     `json:"timeout_ms"`
		Metadata     string  `json:"metadata"`
		Extra        string  `json:"extra,omitempty"`
		Size         int     `json:"size"`
	}
	full := term.FormatOptions{MaxBinary: -1, MaxElems: -1, MaxDepth: -1}
	o := out{CreatedAt: s.CreatedAt, LastAccessed: s.LastAccessed, Metadata: full.Format(s.Metadata), Size: len(s.Raw)}
	if s.Metadata == nil {
		o.Metadata = "#{}"
	}
	if utf8.Valid(s.ID) {
		id := string(s.ID)
		o.ID = &id
	} else {
		id := base64.StdEncoding.EncodeToString(s.ID)
		o.IDBase64 = &id
	}
	if s.Infinite {
		o.TimeoutMs = "infinity"
	} else {
		o.TimeoutMs = s.TimeoutMs
	}
	if len(s.Extra) > 0 {
		o.Extra = full.Format(s.Extra)
	}
	return json.Marshal(o)
}
