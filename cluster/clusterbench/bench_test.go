package clusterbench_test

import (
	"os"
	"testing"

	"github.com/erlmcp/migctl/cluster/clusterbench"
	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// The benches at a small size, so they keep working; MIGCTL_BENCH=1 runs
// them at issue 5's size (100k sessions, 1k changed; 5 detection runs).
func TestDetection(t *testing.T) {
	runs := 2
	if os.Getenv("MIGCTL_BENCH") != "" {
		runs = 5
	}
	r := clusterbench.Detection(t, runs)
	t.Log(r)
	if r.Max > 2e9 {
		t.Errorf("a split was reported later than 2 s after reconnect: %v", r)
	}
}

func TestHeal(t *testing.T) {
	n, c := 5000, 200
	if os.Getenv("MIGCTL_BENCH") != "" {
		n, c = 100000, 1000
	}
	r := clusterbench.Heal(t, n, c)
	t.Log(r)
	if r.Kept != r.Updated+r.Created || r.Gone != r.Deleted || !r.Consistent {
		t.Errorf("heal lost changes: %v", r)
	}
}
