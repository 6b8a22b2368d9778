// Package config is migctl's configuration file: one YAML document that
// holds what an operator would otherwise repeat on every command line.
//
// Precedence, highest first: a flag given on the command line, the
// environment variable that flag reads, the configuration file, the
// built-in default. Every scalar field sets one flag on the commands it
// concerns (Bindings: stores.dets_file ↔ --dets-file ↔ MIGCTL_DETS_FILE;
// monitor.interval ↔ --interval of consistency monitor only); the ssh
// section has no flags (hosts and command templates): cluster heal uses it
// when --ssh-config is not given. The file is validated in full before any node is contacted,
// and errors name the field.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/erlmcp/migctl/cluster/sshrun"
	"github.com/erlmcp/migctl/erl"
)

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole file.
type Config struct {
	// Nodes of the erlmcp cluster (name@host).
	Nodes []string `json:"nodes,omitempty"`
	// CookieFile holds the Erlang cookie (the cookie itself never goes in
	// this file).
	CookieFile string `json:"cookie_file,omitempty"`
	// EPMDPort on the nodes' hosts (default 4369).
	EPMDPort int `json:"epmd_port,omitempty"`
	// Timeout of each call to a node, a Go duration ("30s").
	Timeout string `json:"timeout,omitempty"`
	// Journal is migctl's bbolt journal file.
	Journal string `json:"journal,omitempty"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `json:"log_level,omitempty"`
	// LogFormat: text or json (one object a line).
	LogFormat string `json:"log_format,omitempty"`
	// Stores names erlmcp's tables (the defaults are erlmcp's).
	Stores Stores `json:"stores"`
	// Migration settings (gates and throttling).
	Migration Migration `json:"migration"`
	// Monitor settings of `migctl consistency monitor`.
	Monitor Monitor `json:"monitor"`
	// SSH is the out-of-band path used by `migctl cluster heal` when
	// Erlang distribution is broken.
	SSH *sshrun.Config `json:"ssh,omitempty"`
}

// Stores names the session tables.
type Stores struct {
	ETSTable    string `json:"ets_table,omitempty"`
	DETSTable   string `json:"dets_table,omitempty"`
	DETSFile    string `json:"dets_file,omitempty"`
	MnesiaTable string `json:"mnesia_table,omitempty"`
}

// Migration holds the migration's gates.
type Migration struct {
	// Prometheus is the base URL of the Prometheus that phase gates query.
	Prometheus string `json:"prometheus,omitempty"`
	// MaxReadErrorRate is the phase3 gate, as a fraction (0.0001 = 0.01 %).
	MaxReadErrorRate float64 `json:"max_read_error_rate,omitempty"`
}

// Monitor holds the consistency monitor's settings.
type Monitor struct {
	// MetricsAddr is where /metrics and /healthz are served
	// (--metrics-addr, as for cluster watch).
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Listen is MetricsAddr's former name, still read.
	Listen       string `json:"listen,omitempty"`
	AlertWebhook string `json:"alert_webhook,omitempty"`
	Interval     string `json:"interval,omitempty"`
	Sample       int    `json:"sample,omitempty"`
}

// Load reads and validates a file. YAML is turned into JSON and decoded
// strictly, so an unknown or misspelt field is an error that names it.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, path)
}

// Parse decodes and validates YAML (name is for messages). Every error
// says where: "name:LINE: field: problem", so an operator can open the file
// at that line (YAML's own syntax errors carry their line already).
func Parse(b []byte, name string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	var doc any
	if err := root.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	c := &Config{}
	if doc == nil {
		return c, nil
	}
	j, err := json.Marshal(normalize(doc))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		line := 0
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			line = lineOf(&root, te.Field)
			msg = fmt.Sprintf("%s: a %s is not a %s", te.Field, te.Value, te.Type)
		case strings.HasPrefix(msg, "unknown field "):
			f, _ := strconv.Unquote(strings.TrimPrefix(msg, "unknown field "))
			line = lineOfKey(&root, f)
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, where(name, line), msg)
	}
	if err := c.Validate(); err != nil {
		var out []error
		for _, e := range unjoin(err) {
			var fe *FieldError
			if errors.As(e, &fe) {
				e = fmt.Errorf("%s: %w", where(name, lineOf(&root, fe.Field)), e)
			} else {
				e = fmt.Errorf("%s: %w", name, e)
			}
			out = append(out, e)
		}
		return nil, errors.Join(out...)
	}
	return c, nil
}

// FieldError is a validation error of one field (its path as in the file:
// "monitor.interval", "ssh.hosts[0].user").
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%v: %s: %s", ErrInvalid, e.Field, e.Msg) }

// Is makes every FieldError an ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// where is "name:line", or name when the line is not known.
func where(name string, line int) string {
	if line <= 0 {
		return name
	}
	return fmt.Sprintf("%s:%d", name, line)
}

// lineOf finds the line of a field path ("monitor.interval",
// "nodes[1]", "ssh.hosts[0].user") in the document: the value's line, or
// the deepest enclosing key's when the field itself is absent (a required
// field that is missing).
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			key = part[:i]
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				idx = v
			}
		}
		if key != "" {
			next := mapValue(n, key)
			if next == nil {
				return line
			}
			n, line = next, next.Line
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

// mapValue is the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// lineOfKey is the line of the first mapping key named key anywhere in the
// document (encoding/json names an unknown field without its path).
func lineOfKey(n *yaml.Node, key string) int {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i].Line
			}
		}
	}
	for _, c := range n.Content {
		if l := lineOfKey(c, key); l > 0 {
			return l
		}
	}
	return 0
}

// normalize turns yaml.v3's generic values into ones encoding/json takes.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case map[any]any:
		m := map[string]any{}
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	}
	return v
}

// Validate checks every field; the error names the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	for i, n := range c.Nodes {
		if _, _, err := erl.SplitNode(n); err != nil {
			bad(fmt.Sprintf("nodes[%d]", i), "%q is not name@host", n)
		}
	}
	if c.CookieFile != "" {
		if _, err := os.Stat(c.CookieFile); err != nil {
			bad("cookie_file", "%v", err)
		}
	}
	if c.EPMDPort < 0 || c.EPMDPort > 65535 {
		bad("epmd_port", "%d is not a port", c.EPMDPort)
	}
	for field, d := range map[string]string{"timeout": c.Timeout, "monitor.interval": c.Monitor.Interval} {
		if d == "" {
			continue
		}
		if v, err := time.ParseDuration(d); err != nil || v <= 0 {
			bad(field, "%q is not a positive duration like 30s", d)
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		bad("log_format", "%q: want text or json", c.LogFormat)
	}
	for field, u := range map[string]string{"migration.prometheus": c.Migration.Prometheus, "monitor.alert_webhook": c.Monitor.AlertWebhook} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad(field, "%q is not an http(s) URL", u)
		}
	}
	if r := c.Migration.MaxReadErrorRate; r < 0 || r > 1 {
		bad("migration.max_read_error_rate", "%v: want a fraction between 0 and 1 (0.0001 = 0.01 %%)", r)
	}
	if c.Monitor.MetricsAddr != "" && c.Monitor.Listen != "" {
		bad("monitor.listen", "the former name of monitor.metrics_addr: give only metrics_addr")
	}
	if c.Monitor.Sample < 0 {
		bad("monitor.sample", "must not be negative")
	}
	if c.SSH != nil {
		for i, h := range c.SSH.Hosts {
			f := fmt.Sprintf("ssh.hosts[%d]", i)
			if _, _, err := erl.SplitNode(h.Node); err != nil {
				bad(f+".node", "%q is not name@host", h.Node)
			}
			if h.User == "" {
				bad(f+".user", "required")
			}
		}
	}
	return errors.Join(errs...)
}

// Binding says which flag a field of the file sets: on which commands
// (Command is a prefix of the command path, "" for every command), and
// which environment variable overrides it (the one the flag itself reads;
// "" when it reads none).
type Binding struct {
	Command string
	Flag    string
	Env     string
	Value   string
}

// Bindings lists the flag values this file gives, per command. Settings
// of one command do not leak into another's flag of the same name (the
// monitor's interval is not cluster watch's).
func (c *Config) Bindings() []Binding {
	var out []Binding
	add := func(cmd, flag, env, v string) {
		if v != "" {
			out = append(out, Binding{Command: cmd, Flag: flag, Env: env, Value: v})
		}
	}
	add("", "nodes", "MIGCTL_NODES", strings.Join(c.Nodes, ","))
	add("", "cookie-file", "MIGCTL_COOKIE_FILE", c.CookieFile)
	if c.EPMDPort > 0 {
		add("", "epmd-port", "ERL_EPMD_PORT", strconv.Itoa(c.EPMDPort))
	}
	add("", "timeout", "MIGCTL_TIMEOUT", c.Timeout)
	add("", "journal", "MIGCTL_JOURNAL", c.Journal)
	add("", "log-level", "MIGCTL_LOG_LEVEL", c.LogLevel)
	add("", "log-format", "MIGCTL_LOG_FORMAT", c.LogFormat)
	add("", "ets-table", "MIGCTL_ETS_TABLE", c.Stores.ETSTable)
	add("", "dets-table", "MIGCTL_DETS_TABLE", c.Stores.DETSTable)
	add("", "dets-file", "MIGCTL_DETS_FILE", c.Stores.DETSFile)
	add("", "mnesia-table", "MIGCTL_MNESIA_TABLE", c.Stores.MnesiaTable)
	add("migctl cluster", "tables", "MIGCTL_MNESIA_TABLE", c.Stores.MnesiaTable)
	add("migctl phase", "prometheus", "", c.Migration.Prometheus)
	if c.Migration.MaxReadErrorRate > 0 {
		add("migctl phase", "max-read-error-rate", "", strconv.FormatFloat(c.Migration.MaxReadErrorRate, 'g', -1, 64))
	}
	addr := c.Monitor.MetricsAddr
	if addr == "" {
		addr = c.Monitor.Listen
	}
	add("migctl consistency monitor", "metrics-addr", "MIGCTL_METRICS_ADDR", addr)
	add("migctl consistency monitor", "alert-webhook", "MIGCTL_ALERT_WEBHOOK", c.Monitor.AlertWebhook)
	add("migctl consistency monitor", "interval", "", c.Monitor.Interval)
	if c.Monitor.Sample > 0 {
		add("migctl consistency monitor", "sample", "", strconv.Itoa(c.Monitor.Sample))
	}
	return out
}

// For returns the bindings that apply to a command path, by flag name.
func (c *Config) For(commandPath string) map[string]Binding {
	m := map[string]Binding{}
	for _, b := range c.Bindings() {
		if b.Command == "" || commandPath == b.Command || strings.HasPrefix(commandPath, b.Command+" ") {
			m[b.Flag] = b
		}
	}
	return m
}

// Example is a commented configuration file (`migctl config example`).
const Example = `# migctl configuration. Every field is optional; flags and their MIGCTL_*
# environment variables override it (--dets-file ↔ MIGCTL_DETS_FILE ↔
# stores.dets_file). Check a file with: migctl --config FILE config check
nodes:                      # --nodes, MIGCTL_NODES
  - erlmcp1@prod
  - erlmcp2@prod
  - erlmcp3@prod
cookie_file: /etc/erlmcp/cookie   # --cookie-file; the cookie itself never goes here
epmd_port: 4369             # --epmd-port, ERL_EPMD_PORT
timeout: 30s                # --timeout: each call to a node
journal: /var/lib/migctl/journal.db   # --journal
log_level: info             # --log-level
log_format: text            # --log-format: text, or json for a log shipper
stores:
  ets_table: erlmcp_sessions_ets      # --ets-table
  dets_table: erlmcp_sessions_dets    # --dets-table
  dets_file: /var/lib/erlmcp/dets/erlmcp_sessions.dets   # --dets-file (only when the app does not have it open)
  mnesia_table: erlmcp_session        # --mnesia-table
migration:
  prometheus: http://127.0.0.1:9090   # phase --prometheus: the phase3 gate reads error rates there
  max_read_error_rate: 0.0001         # phase --max-read-error-rate: phase3 gate (0.01 %)
monitor:                              # consistency monitor only
  metrics_addr: 127.0.0.1:9464        # --metrics-addr, MIGCTL_METRICS_ADDR (was listen)
  alert_webhook: http://127.0.0.1:9093/api/v2/alerts   # --alert-webhook, MIGCTL_ALERT_WEBHOOK (Alertmanager)
  interval: 5m                        # --interval
  sample: 10000                       # --sample
ssh:                        # out-of-band path of 'cluster heal' (used unless --ssh-config is given)
  known_hosts: /etc/migctl/known_hosts   # host keys are always verified
  timeout: 60s
  commands:                 # text/template; .Node .Host .MnesiaDir .Stamp, quote
    stop: /opt/erlmcp/current/bin/erlmcp stop
    move_aside: mv {{quote .MnesiaDir}} {{quote (printf "%s.migctl-%s" .MnesiaDir .Stamp)}}
    start: /opt/erlmcp/current/bin/erlmcp start
  hosts:
    - node: erlmcp2@prod
      addr: erlmcp2.prod:22
      user: erlmcp
      key_file: /etc/migctl/id_ed25519   # empty: use the SSH agent
      mnesia_dir: /var/lib/erlmcp/mnesia
`
