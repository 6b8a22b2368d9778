package session

import (
	"math/rand/v2"
	"testing"
	"time"
)

// FuzzParse checks that Parse and Equal never panic, and that a blob Parse
// accepts equals itself (and a parsed copy of itself) under Equal.
func FuzzParse(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 8 {
		f.Add(Generate(rng, nil, 1_750_000_000_000))
	}
	f.Add(base().blob(f))
	f.Add([]byte{131, 116, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		eq, d := Equal(b, b, CompareOptions{})
		_ = d.String()
		if err != nil {
			if eq {
				t.Fatal("a blob that is not a session compared equal")
			}
			return
		}
		if !eq || s.Expired(s.LastAccessed) && !s.Infinite && s.TimeoutMs >= 0 {
			t.Fatalf("Equal(b, b) = %v; Expired at last access = %v", eq, s.Expired(s.LastAccessed))
		}
		if eq, d := Equal(b, s.Raw, CompareOptions{LastAccessedSlack: time.Second}); !eq {
			t.Fatalf("Raw differs from the blob: %s", d)
		}
		_, _ = s.MarshalJSON()
	})
}
