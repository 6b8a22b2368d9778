package session

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erlmcp/migctl/term"
	"github.com/erlmcp/migctl/term/erltest"
)

// TestAgainstErlang runs the VM once: it writes sessions built the way
// erlmcp builds them (plus values that are not sessions) for Parse, and it
// checks the blobs Generate wrote: the VM must read them as erlmcp session
// maps, re-encode them to the same bytes, and agree with Expired.
func TestAgainstErlang(t *testing.T) {
	const now = int64(1_750_000_000_000)
	// Checked 10 minutes after generation, so some sessions have expired.
	const checkAt = now + 10*60*1000
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(42, 1))
	generated := map[string]Session{}
	for i := range 200 {
		var id []byte
		if i%5 == 0 {
			id = fmt.Appendf(nil, "sess-%010d", i) // any binary is a valid id
		}
		b := Generate(rng, id, now)
		if len(b) < 400 || len(b) > 600 {
			t.Errorf("Generate made %d bytes, want 400..600", len(b))
		}
		s, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Generate()): %v", err)
		}
		name := fmt.Sprintf("gen%03d", i)
		generated[name] = s
		erltest.WriteFile(t, filepath.Join(dir, "go"), name+".etf", b)
	}

	ok := erltest.Results(t, erltest.Escript(t, "testdata/sessions.escript", dir, fmt.Sprint(checkAt)))
	expired := 0
	for name, s := range generated {
		res, found := ok[name]
		if !found {
			t.Errorf("%s: not confirmed by Erlang", name)
			continue
		}
		if want := res[1] == "true"; s.Expired(checkAt) != want {
			t.Errorf("%s: Expired = %v, erlmcp's rule says %v", name, !want, want)
		}
		if res[1] == "true" {
			expired++
		}
	}
	if expired == 0 || expired == len(generated) {
		t.Errorf("%d of %d generated sessions expired; the check needs both kinds", expired, len(generated))
	}

	blobs := erltest.ReadDir(t, filepath.Join(dir, "erl"), ".etf")
	t.Run("sessions", func(t *testing.T) {
		const t0 = 1700000000000
		hex := []byte("0123456789ABCDEF0123456789ABCDEF")
		for _, c := range []struct {
			name     string
			id       []byte
			last     int64
			timeout  int64
			infinite bool
			metaLen  int
		}{
			{"hex_touched", hex, t0 + 5000, 1800000, false, 5},
			{"utf8_infinity", []byte("séance-ü-日本"), t0, 0, true, 0},
			{"nonutf8_id", []byte{255, 0, 1}, t0, 1, false, 0},
			{"big_metadata", []byte("BIG"), t0, 60000, false, 1},
			{"many_atom_keys", []byte("MANY"), t0, 60000, false, 40},
			{"compressed", hex, t0 + 5000, 1800000, false, 5},
			{"minor_version_2", hex, t0 + 5000, 1800000, false, 5},
			{"extra_key", hex, t0 + 5000, 1800000, false, 5},
		} {
			s, err := Parse(blobs[c.name])
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if !bytes.Equal(s.ID, c.id) || s.CreatedAt != t0 || s.LastAccessed != c.last ||
				s.TimeoutMs != c.timeout || s.Infinite != c.infinite || len(s.Metadata) != c.metaLen {
				t.Errorf("%s: got %+v", c.name, s)
			}
			if !bytes.Equal(s.Raw, blobs[c.name]) {
				t.Errorf("%s: Raw is not the original blob", c.name)
			}
		}
		// Metadata keeps keys of every type.
		s, _ := Parse(blobs["hex_touched"])
		for _, k := range []term.Term{term.Binary("client"), term.Atom("user"), term.Tuple{term.Atom("tuple"), term.Atom("key")}} {
			if _, ok := s.Metadata.Get(k); !ok {
				t.Errorf("metadata lost key %s", term.Format(k))
			}
		}
		if v, _ := s.Metadata.Get(term.Binary("nested")); term.Format(v) != `#{<<"a">> => [1,2|3]}` {
			t.Errorf("nested metadata = %s", term.Format(v))
		}
		// An extra top-level key is kept and compared.
		x, _ := Parse(blobs["extra_key"])
		if len(x.Extra) != 1 || x.Extra[0].Key != term.Atom("owner") {
			t.Errorf("Extra = %s", term.Format(x.Extra))
		}
		if eq, d := Equal(blobs["hex_touched"], blobs["extra_key"], CompareOptions{}); eq || !strings.Contains(d.String(), "owner: (absent) → #Pid<") {
			t.Errorf("extra key not compared: %v %s", eq, d)
		}
		// The same session written three ways is one session.
		for _, other := range []string{"compressed", "minor_version_2"} {
			if eq, d := Equal(blobs["hex_touched"], blobs[other], CompareOptions{}); !eq {
				t.Errorf("hex_touched vs %s: %s", other, d)
			}
		}
	})

	t.Run("not sessions", func(t *testing.T) {
		for name, want := range map[string]string{
			"ets_row":            "not a map (it looks like an ETS/DETS row",
			"mnesia_record":      "it looks like a Mnesia record",
			"missing_id":         "no id key",
			"binary_keys":        `no id key (keys: [<<"created_at">>,<<"id">>])`,
			"atom_id":            "id is an atom some_atom, want a binary",
			"float_created":      "created_at is a float 1.0e12, want an integer",
			"timeout_forever":    "timeout_ms is an atom forever, want an integer or infinity",
			"metadata_list":      "metadata is a list [], want a map",
			"huge_last_accessed": "last_accessed is 1180591620717411303424, outside the 64-bit range",
			"not_etf":            "version byte is 123",
		} {
			_, err := Parse(blobs[name])
			if !errors.Is(err, ErrNotSession) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: Parse error %v, want %q", name, err, want)
			}
		}
		var de *term.DecodeError
		if _, err := Parse(blobs["not_etf"]); !errors.As(err, &de) {
			t.Errorf("a decode error should be a *term.DecodeError too: %v", err)
		}
	})
}
