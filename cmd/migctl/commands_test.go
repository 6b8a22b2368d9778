package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/alerting"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// Unit tests of the command structs' pieces; the commands against real
// nodes are TestConsistencyMonitorCLI, TestHealKilledAtEachStepUnderTraffic
// and package cluster's heal tests.

func quietApp() *app {
	return &app{in: nil, out: io.Discard, err: io.Discard, log: slog.New(slog.DiscardHandler)}
}

// HealCommand.check: every flag combination it refuses is exit 2 with a
// message naming the flag; the ones it accepts parse --split-at and
// --keep-window.
func TestHealCheck(t *testing.T) {
	t.Setenv("MIGCTL_FAILPOINT", "")
	bad := []struct {
		name string
		h    HealCommand
		msg  string
	}{
		{"neither --plan nor --execute", HealCommand{KeepWindow: "auto"}, "exactly one of --plan, --execute and --resume"},
		{"both", HealCommand{Plan: true, Execute: true, KeepWindow: "auto"}, "exactly one"},
		{"--resume with --execute", HealCommand{Resume: "h1", Execute: true, KeepWindow: "auto"}, "--resume goes alone"},
		{"--plan-file with --plan", HealCommand{Plan: true, PlanFile: "p.json", KeepWindow: "auto"}, "--plan-file goes with --execute"},
		{"--plan-file with --winner", HealCommand{Execute: true, PlanFile: "p.json", Winner: "a@h", KeepWindow: "auto"}, "carries its own winner"},
		{"--plan-file with --keep-window", HealCommand{Execute: true, PlanFile: "p.json", KeepWindow: "90s"}, "carries its own"},
		{"bad --split-at", HealCommand{Plan: true, SplitAt: "yesterday", KeepWindow: "auto"}, "--split-at"},
		{"bad --keep-window", HealCommand{Plan: true, KeepWindow: "-3s"}, "--keep-window"},
		{"bad --stop-after", HealCommand{Execute: true, StopAfter: "lunch", KeepWindow: "auto"}, "not a step of the heal"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			h.app = quietApp()
			err := h.check(context.Background())
			require.ErrorContains(t, err, c.msg)
			require.Equal(t, cliutil.ExitUsage, exitCode(err))
		})
	}

	h := HealCommand{app: quietApp(), Plan: true, SplitAt: "2026-11-28T01:02:03Z", KeepWindow: "off"}
	require.NoError(t, h.check(context.Background()))
	require.Equal(t, time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC), h.splitAt)
	require.Negative(t, h.keepWindow, "off is no window")
	require.Nil(t, h.hook)

	h = HealCommand{app: quietApp(), Resume: "h1", KeepWindow: "auto"}
	require.NoError(t, h.check(context.Background()))

	t.Setenv("MIGCTL_FAILPOINT", "explode")
	h = HealCommand{app: quietApp(), Plan: true, KeepWindow: "auto"}
	err := h.check(context.Background())
	require.ErrorContains(t, err, "MIGCTL_FAILPOINT")
	require.Equal(t, cliutil.ExitUsage, exitCode(err))
	t.Setenv("MIGCTL_FAILPOINT", "error@merge")
	require.NoError(t, h.check(context.Background()))
	require.ErrorContains(t, h.hook("merge"), "failpoint merge")
	require.NoError(t, h.hook("backup"))
}

func TestHealOutOfBand(t *testing.T) {
	h := HealCommand{app: quietApp()}
	oob, err := h.outOfBand()
	require.NoError(t, err)
	require.Nil(t, oob, "no SSH without --ssh-config or a config section")

	h.SSHNodes = []string{"b@h"}
	_, err = h.outOfBand()
	require.ErrorContains(t, err, "--ssh-nodes needs --ssh-config")
	require.Equal(t, cliutil.ExitUsage, exitCode(err))

	h.SSHConfig = "/nonexistent/ssh.json"
	_, err = h.outOfBand()
	require.ErrorContains(t, err, "--ssh-config")
	require.Equal(t, cliutil.ExitUsage, exitCode(err))
}

// MonitorCommand.verdict: a signal ends with 0 whatever was seen; a run
// that reached --duration is 4 when it saw mismatches; a failure stays.
func TestMonitorVerdict(t *testing.T) {
	c := &MonitorCommand{app: quietApp()}
	running := context.Background()
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	seen := consistency.MonitorState{Checks: 9, Mismatches: 3}
	clean := consistency.MonitorState{Checks: 9}
	boom := errors.New("journal gone")

	require.NoError(t, c.verdict(stopped, seen, nil))
	require.NoError(t, c.verdict(stopped, seen, context.Canceled))
	require.ErrorIs(t, c.verdict(stopped, clean, boom), boom)
	require.NoError(t, c.verdict(running, clean, nil))
	err := c.verdict(running, seen, nil)
	require.ErrorContains(t, err, "3 mismatches seen")
	require.Equal(t, cliutil.ExitDifferences, exitCode(err))
	err = c.verdict(running, seen, boom)
	require.ErrorIs(t, err, boom)
	require.Equal(t, cliutil.ExitFailure, exitCode(err))
}

// MonitorCommand.alerter posts the library's MismatchAlert to
// --alert-webhook with the monitor's labels and its /metrics as the
// generator; none without a webhook; a failing Alertmanager is logged,
// not fatal.
func TestMonitorAlerter(t *testing.T) {
	c := &MonitorCommand{app: quietApp()}
	require.Nil(t, c.alerter(func() string { return "" }))

	var mu sync.Mutex
	var got []alerting.Alert
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/alerts" {
			http.NotFound(w, r)
			return
		}
		var as []alerting.Alert
		if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, as...)
		mu.Unlock()
	}))
	t.Cleanup(am.Close)
	c.AlertWebhook = am.URL
	post := c.alerter(func() string { return "http://127.0.0.1:9464/metrics" })
	require.NotNil(t, post)
	post(context.Background(), consistency.MismatchAlert{Monitor: "dets→mnesia", Source: "dets@n1", Target: "mnesia@n1", Check: 7,
		Fresh:  []consistency.Difference{{Kind: consistency.KindMissingInTarget, ID: "s-1", Diff: "missing"}},
		Counts: map[consistency.Kind]int{consistency.KindMissingInTarget: 1}, At: time.Now().UTC()})
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1)
	require.Equal(t, map[string]string{"alertname": consistency.AlertName, "severity": "critical", "sender": "migctl-monitor",
		"monitor": "dets→mnesia", "source_store": "dets@n1", "target_store": "mnesia@n1", "check": "7"}, got[0].Labels)
	require.Equal(t, "http://127.0.0.1:9464/metrics", got[0].GeneratorURL)
	require.Contains(t, got[0].Annotations["description"], `"s-1"`)
	require.Equal(t, "1 new session mismatch(es) between dets@n1 and mnesia@n1", got[0].Annotations["summary"])
}
