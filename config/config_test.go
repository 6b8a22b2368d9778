package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExampleIsValid(t *testing.T) {
	ex := strings.Replace(Example, "cookie_file: /etc/erlmcp/cookie", "cookie_file: "+t.TempDir(), 1)
	c, err := Parse([]byte(ex), "example")
	require.NoError(t, err)
	require.Len(t, c.Nodes, 3)
	require.Equal(t, "erlmcp_session", c.Stores.MnesiaTable)
	require.Equal(t, 0.0001, c.Migration.MaxReadErrorRate)
	require.Len(t, c.SSH.Hosts, 1)
	fv := c.For("migctl sessions count")
	require.Equal(t, "erlmcp1@prod,erlmcp2@prod,erlmcp3@prod", fv["nodes"].Value)
	require.Equal(t, "/var/lib/erlmcp/dets/erlmcp_sessions.dets", fv["dets-file"].Value)
	require.Equal(t, "MIGCTL_DETS_FILE", fv["dets-file"].Env)
	// The monitor's settings stay with the monitor.
	require.NotContains(t, fv, "interval")
	require.NotContains(t, c.For("migctl cluster watch"), "interval")
	require.Equal(t, "5m", c.For("migctl consistency monitor")["interval"].Value)
	require.Equal(t, "127.0.0.1:9464", c.For("migctl consistency monitor")["metrics-addr"].Value)
	old, err := Parse([]byte("monitor: {listen: 127.0.0.1:1}"), "old.yaml")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:1", old.For("migctl consistency monitor")["metrics-addr"].Value, "the former key still works")
	require.Equal(t, "erlmcp_session", c.For("migctl cluster status")["tables"].Value)
}

func TestErrorsNameTheField(t *testing.T) {
	for doc, field := range map[string]string{
		"nodez: [a@b]":                            "nodez",
		"nodes: [not-a-node]":                     "nodes[0]",
		"timeout: soon":                           "timeout",
		"log_level: loud":                         "log_level",
		"log_format: xml":                         "log_format",
		"migration: {max_read_error_rate: 5}":     "migration.max_read_error_rate",
		"migration: {prometheus: 'ftp://x'}":      "migration.prometheus",
		"stores: {dets_fil: x}":                   "dets_fil",
		"ssh: {hosts: [{node: a@b}]}":             "ssh.hosts[0].user",
		"cookie_file: /nonexistent/migctl/cookie": "cookie_file",
		"epmd_port: 70000":                        "epmd_port",
		"monitor: {interval: -5m}":                "monitor.interval",
	} {
		_, err := Parse([]byte(doc), "t.yaml")
		require.ErrorIs(t, err, ErrInvalid, doc)
		require.Contains(t, err.Error(), field, doc)
	}
}

// TestErrorsGiveTheLine: every error names the file's line, so the
// operator can open the file there.
func TestErrorsGiveTheLine(t *testing.T) {
	for doc, want := range map[string]string{
		"nodes:\n  - a@b\nnodez: [a@b]\n":                     `t.yaml:3: unknown field "nodez"`,
		"nodes:\n  - a@b\n  - not-a-node\n":                   "t.yaml:3: invalid configuration: nodes[1]",
		"stores:\n  ets_table: x\n  dets_fil: y\n":            `t.yaml:3: unknown field "dets_fil"`,
		"log_level: info\nmonitor:\n  sample: lots\n":         "t.yaml:3: monitor.sample",
		"monitor:\n  listen: x\n  interval: soon\n":           "t.yaml:3: invalid configuration: monitor.interval",
		"ssh:\n  hosts:\n    - node: a@b\n      addr: b:22\n": "t.yaml:3: invalid configuration: ssh.hosts[0].user",
		"nodes:\n  - a@b\n timeout: 5s\n":                     "t.yaml: yaml: line 2",
	} {
		_, err := Parse([]byte(doc), "t.yaml")
		require.ErrorIs(t, err, ErrInvalid, doc)
		require.Contains(t, err.Error(), want, doc)
	}
}

// TestBounds: each bounded field accepts its edges and rejects just past
// them, and the error names the field (table-driven; runs without Erlang).
func TestBounds(t *testing.T) {
	cases := []struct {
		doc   string
		field string // "" = valid
	}{
		{"epmd_port: 0\n", ""},
		{"epmd_port: 65535\n", ""},
		{"epmd_port: 65536\n", "epmd_port"},
		{"epmd_port: -1\n", "epmd_port"},
		{"timeout: 1ms\n", ""},
		{"timeout: 0s\n", "timeout"},
		{"timeout: -5s\n", "timeout"},
		{"monitor:\n  interval: 30s\n", ""},
		{"monitor:\n  interval: 0s\n", "monitor.interval"},
		{"migration:\n  max_read_error_rate: 0\n", ""},
		{"migration:\n  max_read_error_rate: 1\n", ""},
		{"migration:\n  max_read_error_rate: 1.01\n", "migration.max_read_error_rate"},
		{"migration:\n  max_read_error_rate: -0.1\n", "migration.max_read_error_rate"},
		{"monitor:\n  sample: 0\n", ""},
		{"monitor:\n  sample: -1\n", "monitor.sample"},
		{"migration:\n  prometheus: http://127.0.0.1:9090\n", ""},
		{"migration:\n  prometheus: 127.0.0.1:9090\n", "migration.prometheus"},
		{"monitor:\n  alert_webhook: ftp://x/y\n", "monitor.alert_webhook"},
		{"log_level: trace\n", "log_level"},
		{"log_format: xml\n", "log_format"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.doc), "t.yaml")
		if c.field == "" {
			require.NoError(t, err, c.doc)
			continue
		}
		require.ErrorIs(t, err, ErrInvalid, c.doc)
		require.Contains(t, err.Error(), c.field+":", c.doc)
	}
}
