package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/erlmcp/migctl/term"
)

// fields builds a session map; tests change one entry at a time.
type fields struct {
	id       term.Term
	created  term.Term
	last     term.Term
	timeout  term.Term
	metadata term.Term
	extra    term.Map
}

func base() fields {
	return fields{
		id:       term.Binary("0123456789ABCDEF0123456789ABCDEF"),
		created:  int64(1_700_000_000_000),
		last:     int64(1_700_000_005_000),
		timeout:  int64(1_800_000),
		metadata: term.Map{{Key: term.Binary("user"), Value: term.Binary("a")}, {Key: term.Binary("n"), Value: int64(1)}},
	}
}

func (f fields) blob(t testing.TB) []byte {
	t.Helper()
	m := term.Map{}
	add := func(k string, v term.Term) {
		if v != nil {
			m = append(m, term.MapPair{Key: term.Atom(k), Value: v})
		}
	}
	add("id", f.id)
	add("created_at", f.created)
	add("last_accessed", f.last)
	add("timeout_ms", f.timeout)
	add("metadata", f.metadata)
	m = append(m, f.extra...)
	b, err := term.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	b := base().blob(t)
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.ID) != "0123456789ABCDEF0123456789ABCDEF" || s.CreatedAt != 1_700_000_000_000 ||
		s.LastAccessed != 1_700_000_005_000 || s.TimeoutMs != 1_800_000 || s.Infinite || len(s.Metadata) != 2 {
		t.Fatalf("Parse = %+v", s)
	}
	// The session owns its memory: the caller may reuse the blob.
	for i := range b {
		b[i] = 0
	}
	if string(s.ID) != "0123456789ABCDEF0123456789ABCDEF" || s.Raw[0] != 131 {
		t.Fatal("Session aliases the caller's buffer")
	}

	f := base()
	f.timeout = term.Atom("infinity")
	if s, err := Parse(f.blob(t)); err != nil || !s.Infinite {
		t.Fatalf("infinity: %+v, %v", s, err)
	}
}

func TestParseRejects(t *testing.T) {
	mutate := func(fn func(*fields)) []byte {
		f := base()
		fn(&f)
		return f.blob(t)
	}
	cases := map[string]struct {
		blob []byte
		want string
	}{
		"no id":            {mutate(func(f *fields) { f.id = nil }), "no id key"},
		"no metadata":      {mutate(func(f *fields) { f.metadata = nil }), "no metadata key"},
		"id string":        {mutate(func(f *fields) { f.id = term.String("abc") }), `id is a list "abc", want a binary`},
		"big created":      {mutate(func(f *fields) { f.created = uint64(math.MaxUint64) }), "outside the 64-bit range"},
		"metadata binary":  {mutate(func(f *fields) { f.metadata = term.Binary("x") }), "metadata is a binary"},
		"timeout float":    {mutate(func(f *fields) { f.timeout = 1.5 }), "timeout_ms is a float 1.5"},
		"a tuple":          {mustEncode(t, term.Tuple{term.Atom("a"), int64(1)}), "the value is a 2-tuple, not a map"},
		"trailing garbage": {append(base().blob(t), 0), "trailing bytes"},
		"empty":            {nil, "empty input"},
	}
	for name, c := range cases {
		_, err := Parse(c.blob)
		if !errors.Is(err, ErrNotSession) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", name, err, c.want)
		}
	}
}

func mustEncode(t testing.TB, x term.Term) []byte {
	t.Helper()
	b, err := term.Encode(x)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExpired(t *testing.T) {
	s := Session{LastAccessed: 1000, TimeoutMs: 500}
	for now, want := range map[int64]bool{
		1000: false, 1499: false,
		1500: false, // exactly the timeout: erlmcp uses >, so not yet
		1501: true, 999999: true,
		0: false, // clock went backwards
	} {
		if got := s.Expired(now); got != want {
			t.Errorf("Expired(%d) = %v, want %v", now, got, want)
		}
	}
	inf := Session{LastAccessed: 0, Infinite: true, TimeoutMs: 0}
	if inf.Expired(math.MaxInt64) {
		t.Error("infinity expired")
	}
	zero := Session{LastAccessed: 1000, TimeoutMs: 0}
	if zero.Expired(1000) || !zero.Expired(1001) {
		t.Error("timeout 0")
	}
	neg := Session{LastAccessed: 1000, TimeoutMs: -5}
	if !neg.Expired(1000) {
		t.Error("negative timeout: 0 > -5 holds in Erlang, so it is expired")
	}
	// No overflow: Erlang integers are unbounded and so is this rule.
	extreme := Session{LastAccessed: math.MinInt64, TimeoutMs: math.MaxInt64}
	if !extreme.Expired(math.MaxInt64) {
		t.Error("MaxInt64 - MinInt64 > MaxInt64 should hold")
	}
	if (Session{LastAccessed: math.MaxInt64, TimeoutMs: math.MaxInt64}).Expired(math.MinInt64) {
		t.Error("a huge negative elapsed time is not expiry")
	}
}

// TestNewerRule: the write rule every copy path shares (backfill, import
// if_newer, repair, the heal's merge): a copy replaces another only when
// its last_accessed is strictly later; a tie keeps what is there.
func TestNewerRule(t *testing.T) {
	cases := []struct {
		name     string
		a, b     int64 // last_accessed of the incoming and the existing copy
		replaces bool
	}{
		{"later replaces", 2, 1, true},
		{"earlier does not", 1, 2, false},
		{"tie keeps the existing copy", 5, 5, false},
		{"a millisecond is enough", 1_700_000_000_001, 1_700_000_000_000, true},
		{"zero (never accessed) loses to any access", 0, 1, false},
		{"negative clock values still order", -1, -2, true},
	}
	for _, c := range cases {
		got := Newer(Session{LastAccessed: c.a}, Session{LastAccessed: c.b})
		if got != c.replaces {
			t.Errorf("%s: Newer(%d, %d) = %v, want %v", c.name, c.a, c.b, got, c.replaces)
		}
	}
}

func TestEqual(t *testing.T) {
	opts := CompareOptions{LastAccessedSlack: time.Second}
	with := func(fn func(*fields)) []byte {
		f := base()
		fn(&f)
		return f.blob(t)
	}
	a := base().blob(t)
	cases := []struct {
		name string
		b    []byte
		eq   bool
		diff string
	}{
		{"identical", a, true, ""},
		{"drift within slack", with(func(f *fields) { f.last = int64(1_700_000_006_000) }), true, ""},
		{"drift beyond slack", with(func(f *fields) { f.last = int64(1_700_000_006_200) }), false, "last_accessed: +1200ms (slack 1000ms)"},
		{"drift backwards", with(func(f *fields) { f.last = int64(1_700_000_003_000) }), false, "last_accessed: -2000ms (slack 1000ms)"},
		{"metadata value", with(func(f *fields) {
			f.metadata = term.Map{{Key: term.Binary("user"), Value: term.Binary("b")}, {Key: term.Binary("n"), Value: int64(1)}}
		}), false, `metadata.<<"user">>: <<"a">> → <<"b">>`},
		{"metadata key added and removed", with(func(f *fields) {
			f.metadata = term.Map{{Key: term.Binary("user"), Value: term.Binary("a")}, {Key: term.Atom("new"), Value: term.Tuple{}}}
		}), false, `metadata.new: (absent) → {}; metadata.<<"n">>: 1 → (absent)`},
		{"id", with(func(f *fields) { f.id = term.Binary("other") }), false, `id: <<"0123456789ABCDEF0123456789ABCDEF">> → <<"other">>`},
		{"created_at", with(func(f *fields) { f.created = int64(1_700_000_000_001) }), false, "created_at: 1700000000000 → 1700000000001 (+1ms)"},
		{"timeout", with(func(f *fields) { f.timeout = term.Atom("infinity") }), false, "timeout_ms: 1800000 → infinity"},
		{"several", with(func(f *fields) { f.timeout = int64(1); f.last = int64(0) }), false, "last_accessed: -1700000005000ms (slack 1000ms); timeout_ms: 1800000 → 1"},
		{"not a session", []byte("garbage"), false, "blob: b: not an erlmcp session: etf: decode: offset 0: version byte is 103, want 131 (not a term_to_binary blob)"},
	}
	for _, c := range cases {
		eq, d := Equal(a, c.b, opts)
		if eq != c.eq || d.String() != c.diff {
			t.Errorf("%s: Equal = %v, %q; want %v, %q", c.name, eq, d, c.eq, c.diff)
		}
		if eq != d.Empty() {
			t.Errorf("%s: equal=%v but Diff.Empty()=%v", c.name, eq, d.Empty())
		}
	}
	if eq, d := Equal([]byte("x"), []byte("x"), opts); eq || d.Empty() {
		t.Error("identical garbage compared equal")
	}
}

func TestEqualIgnoresEncoding(t *testing.T) {
	// A metadata map of more than 32 keys is written in hash order, which
	// differs between nodes; compare terms, not bytes.
	var md term.Map
	for i := range 40 {
		md = append(md, term.MapPair{Key: term.Atom("k" + string(rune('a'+i%26)) + string(rune('a'+i/26))), Value: int64(i)})
	}
	f := base()
	f.metadata = md
	a := f.blob(t)
	rev := make(term.Map, len(md))
	for i, p := range md {
		rev[len(md)-1-i] = p
	}
	f.metadata = rev
	b := f.blob(t)
	if bytes.Equal(a, b) {
		t.Fatal("test needs differently ordered encodings")
	}
	if eq, d := Equal(a, b, CompareOptions{}); !eq {
		t.Errorf("reordered large map: %s", d)
	}
}

func TestDiffIsShort(t *testing.T) {
	f := base()
	f.metadata = term.Map{{Key: term.Binary("blob"), Value: term.Binary(strings.Repeat("x", 1<<20))}}
	a := f.blob(t)
	var md term.Map
	for i := range 20 {
		md = append(md, term.MapPair{Key: int64(i), Value: int64(i)})
	}
	md = append(md, term.MapPair{Key: term.Binary("blob"), Value: term.Binary(strings.Repeat("y", 1<<20))})
	f.metadata = md
	b := f.blob(t)
	eq, d := Equal(a, b, DefaultCompareOptions())
	if eq || len(d.Changes) != 8 || d.Omitted != 13 {
		t.Fatalf("eq %v, %d changes, %d omitted", eq, len(d.Changes), d.Omitted)
	}
	s := d.String()
	if len(s) > 2000 || !strings.HasSuffix(s, "… and 13 more") {
		t.Errorf("diff too long or not capped (%d bytes): %s", len(s), s)
	}
	_, one := Equal(a, func() []byte {
		g := base()
		g.metadata = term.Map{{Key: term.Binary("blob"), Value: term.Binary(strings.Repeat("y", 1<<20))}}
		return g.blob(t)
	}(), CompareOptions{})
	if c := one.Changes[0]; !strings.HasPrefix(c.A, `<<"xxxx`) || len([]rune(c.A)) > maxShort || !strings.HasSuffix(c.A, `...(1048576 bytes)>>`) {
		t.Errorf("long value not truncated: %s", c.A)
	}
}

func TestEqualDescendsIntoNestedMaps(t *testing.T) {
	f := base()
	f.metadata = term.Map{{Key: term.Binary("tags"), Value: term.Map{{Key: term.Atom("env"), Value: term.Binary("prod")}}}}
	a := f.blob(t)
	f.metadata = term.Map{{Key: term.Binary("tags"), Value: term.Map{{Key: term.Atom("env"), Value: term.Binary("dev")}}}}
	_, d := Equal(a, f.blob(t), CompareOptions{})
	if d.String() != `metadata.<<"tags">>.env: <<"prod">> → <<"dev">>` {
		t.Errorf("diff = %s", d)
	}
}

func TestGenerate(t *testing.T) {
	const now = int64(1_750_000_000_000)
	a := Generate(rand.New(rand.NewPCG(1, 2)), nil, now)
	b := Generate(rand.New(rand.NewPCG(1, 2)), nil, now)
	if !bytes.Equal(a, b) {
		t.Fatal("Generate is not deterministic")
	}
	hexID := regexp.MustCompile(`^[0-9A-F]{32}$`)
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := map[int]bool{}
	infinite := 0
	for range 2000 {
		blob := Generate(rng, nil, now)
		if len(blob) < 400 || len(blob) > 600 {
			t.Fatalf("size %d", len(blob))
		}
		sizes[len(blob)/50] = true
		s, err := Parse(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !hexID.Match(s.ID) || s.CreatedAt > s.LastAccessed || s.LastAccessed > now || now-s.CreatedAt > 24*3600*1000 {
			t.Fatalf("implausible session %+v", s)
		}
		if s.Infinite {
			infinite++
		}
		if _, ok := s.Metadata.Get(term.Binary("user_agent")); !ok {
			t.Fatal("no user_agent")
		}
	}
	if len(sizes) < 4 || infinite < 100 || infinite > 300 {
		t.Errorf("poor spread: size buckets %v, %d infinite", sizes, infinite)
	}
	s, _ := Parse(Generate(rng, []byte("my-id"), now))
	if string(s.ID) != "my-id" {
		t.Errorf("id = %q", s.ID)
	}
}

func TestMarshalJSON(t *testing.T) {
	f := base()
	f.timeout = term.Atom("infinity")
	s, _ := Parse(f.blob(t))
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(out, &got)
	if got["id"] != "0123456789ABCDEF0123456789ABCDEF" || got["timeout_ms"] != "infinity" ||
		got["metadata"] != `#{<<"n">> => 1,<<"user">> => <<"a">>}` || got["id_base64"] != nil || got["size"] == nil {
		t.Errorf("JSON = %s", out)
	}
	f = base()
	f.id = term.Binary{0xFF, 0x00}
	s, _ = Parse(f.blob(t))
	out, _ = json.Marshal(s)
	if !strings.Contains(string(out), `"id_base64":"/wA="`) || strings.Contains(string(out), `"id":`) || !strings.Contains(string(out), `"timeout_ms":1800000`) {
		t.Errorf("JSON = %s", out)
	}
	if s.IDString() != "base64:/wA=" {
		t.Errorf("IDString = %s", s.IDString())
	}
}

func BenchmarkParse(b *testing.B) {
	blob := Generate(rand.New(rand.NewPCG(1, 1)), nil, 1_750_000_000_000)
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(blob); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEqualDrifted(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	x := Generate(rng, []byte("id"), 1_750_000_000_000)
	s, _ := Parse(x)
	m, _ := term.Decode(x)
	for i, p := range m.(term.Map) {
		if p.Key == term.Atom("last_accessed") {
			m.(term.Map)[i].Value = s.LastAccessed + 500
		}
	}
	y, _ := term.Encode(m)
	opts := DefaultCompareOptions()
	b.ReportAllocs()
	for b.Loop() {
		if eq, _ := Equal(x, y, opts); !eq {
			b.Fatal("not equal")
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		Generate(rng, nil, 1_750_000_000_000)
	}
}

func TestShortTruncates(t *testing.T) {
	long := term.Tuple{term.Atom(strings.Repeat("a", 50)), term.Atom(strings.Repeat("b", 50))}
	s := short(long)
	if len([]rune(s)) != maxShort || !strings.HasSuffix(s, "…") {
		t.Errorf("short = %s", s)
	}
}
