package cliutil

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// At the default level (warn) the always-shown messages still print; other
// Info records do not; debug stays hidden.
func TestLoggerAlwaysShown(t *testing.T) {
	var buf bytes.Buffer
	lg, err := NewLogger(&buf, "text", "warn", ProgressMessage, "heal step")
	require.NoError(t, err)
	lg.Info("heal step", "step", "merge")
	lg.Info("serving metrics")
	lg.Debug("heal step", "step", "debug-level is never forced")
	lg.With("id", "h1").Info(ProgressMessage, "done", 5)
	lg.Warn("node down")
	out := buf.String()
	require.Contains(t, out, `msg="heal step" step=merge`)
	require.Contains(t, out, "msg=progress id=h1 done=5")
	require.Contains(t, out, `msg="node down"`)
	require.NotContains(t, out, "serving metrics")
	require.NotContains(t, out, "debug-level")
}

// --log-format json: one object a line.
func TestLoggerJSON(t *testing.T) {
	var buf bytes.Buffer
	lg, err := NewLogger(&buf, "json", "info")
	require.NoError(t, err)
	lg.Info("a", "n", 1)
	lg.Warn("b")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		require.Contains(t, m, "msg")
	}
	_, err = NewLogger(&buf, "xml", "info")
	require.Error(t, err)
	_, err = NewLogger(&buf, "text", "loud")
	require.Error(t, err)
}

// Without a terminal, Progress writes a line (through the logger, at any
// level) at its end.
func TestProgressWithoutTerminal(t *testing.T) {
	var buf bytes.Buffer
	lg, err := NewLogger(&buf, "text", "error", ProgressMessage)
	require.NoError(t, err)
	p := NewProgress(&buf, lg, "backfill", 100)
	p.every, p.last = time.Hour, time.Now() // no intermediate line: only Done draws
	p.Add(40)
	p.Done()
	require.Contains(t, buf.String(), "msg=progress op=backfill done=40 total=100")
	require.Contains(t, buf.String(), "final=true")
}
