package clusterbench_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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
	logLines(t, r.String())
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
	logLines(t, r.String())
	if r.Kept != r.Updated+r.Created || r.Gone != r.Deleted || !r.Consistent {
		t.Errorf("heal lost changes: %v", r)
	}
}

// logLines logs each line of s on its own, so that every line carries the
// file:line prefix `make bench` filters on.
func logLines(t *testing.T, s string) {
	t.Helper()
	for _, l := range strings.Split(s, "\n") {
		t.Log(l)
	}
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// The heal benchmark: 3 nodes, 100k sessions, 1,000 ops/s of load
// on every node during the split and the heal (goals: total <= 30 s, every
// write kept, nothing resurrected, no client call longer than 2 s). The
// times are reported, not asserted (a bench on a shared machine); what the
// clients were told is checked: a heal error or any lost, wrong or
// resurrected acknowledged operation fails. MIGCTL_BENCH_RUNS (default 3)
// and MIGCTL_BENCH_SESSIONS (default 100,000) size it.
func TestHealUnderLoad(t *testing.T) {
	n, runs := 5000, 1
	if os.Getenv("MIGCTL_BENCH") != "" {
		n, runs = envInt("MIGCTL_BENCH_SESSIONS", 100000), envInt("MIGCTL_BENCH_RUNS", 3)
	}
	r := clusterbench.HealUnderLoad(t, n, 1000, runs, 3*time.Second)
	checkKept(t, r)
}

// The change recorder's cost: store throughput with the recorders running
// and stopped, same nodes, same work, alternating (goal <= 5 % fewer
// ops/s). Reported, not asserted. MIGCTL_BENCH_RUNS (default 16; 2 s
// each) is the number of measurements of each kind: Mnesia rewrites its
// table files every ~10 s under this load, which halves the throughput for
// a few seconds, so many short measurements are needed for the medians.
func TestRecorderCost(t *testing.T) {
	n, pairs, d := 5000, 2, time.Second
	if os.Getenv("MIGCTL_BENCH") != "" {
		n, pairs, d = envInt("MIGCTL_BENCH_SESSIONS", 100000), envInt("MIGCTL_BENCH_RUNS", 16), 2*time.Second
	}
	for _, r := range clusterbench.RecorderCost(t, n, pairs, d) {
		logLines(t, r.String())
	}
}

// How the change recorders' times of erlmcp's writes fall against the
// writes' calls under load (what orders a heal's decisions). Reported, not
// asserted: MIGCTL_BENCH=1 makes it 1,000 writes per node under 1,000
// ops/s.
func TestRecorderLag(t *testing.T) {
	sessions, writes, rate := 3000, 100, 300
	if os.Getenv("MIGCTL_BENCH") != "" {
		sessions, writes, rate = 30000, 1000, 1000
	}
	r := clusterbench.RecorderLag(t, sessions, writes, rate)
	logLines(t, r.String())
	if r.Missing > 0 || len(r.OriginVsReturn) != r.Writes {
		t.Errorf("records missing: %d (of %d writes)", r.Missing, r.Writes)
	}
}

// The heal under traffic with the nodes' clocks 5 s behind migctl's (as
// when the host's clock is stepped forward after the nodes booted: an
// Erlang node's system time does not follow in its default mode). The
// fence's last read asks each loser what changed since the previous read;
// asked by migctl's clock, a loser 5 s behind answers nothing and the
// writes its clients made between the two reads are discarded by the
// reload (most likely what one CI run of TestHealUnderLoad met: 18
// acknowledged stores lost, 2 deletes undone; before the fix this test lost
// 8 stores). Every acknowledged operation must be kept.
func TestHealUnderLoadClockSkew(t *testing.T) {
	r := clusterbench.HealUnderLoadSkewed(t, 5000, 1000, 1, 3*time.Second, -5*time.Second)
	checkKept(t, r)
	for i, x := range r.Runs {
		if !strings.Contains(stepDetail(x, "read-changes"), "behind") {
			t.Errorf("run %d: read-changes does not say the nodes' clocks are behind migctl's: %q", i, stepDetail(x, "read-changes"))
		}
	}
}

// checkKept logs the heal-under-load runs and fails the test unless every
// acknowledged operation of every run was kept (and enough were checked).
func checkKept(t *testing.T, r clusterbench.LoadHealResult) {
	t.Helper()
	logLines(t, r.String())
	for i, x := range r.Runs {
		logLines(t, fmt.Sprintf("run %d: %v", i, x))
		if x.Lost != 0 || x.Wrong != 0 || x.Resurrected != 0 || !x.Consistent {
			t.Errorf("run %d: acknowledged operations not kept: %v", i, x)
		}
		if x.Checked < 100 {
			t.Errorf("run %d: too few acknowledged operations checked: %v", i, x)
		}
	}
}

// stepDetail is the detail of the heal step named step ("" if none).
func stepDetail(x clusterbench.LoadHealRun, step string) string {
	for _, s := range x.Steps {
		if s.Step == step {
			return s.Detail
		}
	}
	return ""
}
