// Package sshrun is the out-of-band path of a heal: when Erlang
// distribution to a node is broken or its Mnesia is wedged, migctl runs the
// operator's own commands on the node's host over SSH — stop the node,
// move its Mnesia directory aside (kept as a backup), start the node — and
// the node then rejoins the cluster in band (cluster.ExecuteOptions.OutOfBand).
//
// Host keys are always verified against a known_hosts file
// (golang.org/x/crypto/ssh/knownhosts): an unknown host and a changed key
// are refused with ErrHostKeyUnknown and ErrHostKeyChanged. There is no
// option to skip the check. Keys come from a private key file or from the
// SSH agent ($SSH_AUTH_SOCK); user, address and command templates are set
// per host in the configuration.
package sshrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"text/template"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Sentinel errors.
var (
	// ErrHostKeyUnknown: the host is not in the known_hosts file.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyChanged: the host presented a key other than the one in
	// known_hosts (a reinstalled host, or a man in the middle).
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrNoHost: no configuration for the node.
	ErrNoHost = errors.New("no SSH configuration for node")
	// ErrCommand: a remote command failed.
	ErrCommand = errors.New("remote command failed")
)

// Commands are text/template templates run by the remote user's shell.
// Fields available: .Node, .Host, .MnesiaDir, .Stamp (UTC time, safe in
// file names); function quote shell-quotes a value.
type Commands struct {
	Stop      string `json:"stop"`
	MoveAside string `json:"move_aside"`
	Start     string `json:"start"`
}

// Host is how to reach one node's host.
type Host struct {
	Node string `json:"node"` // the Erlang node name this entry is for
	// Addr is host:port of sshd; default the node's host part, port 22.
	Addr string `json:"addr,omitempty"`
	User string `json:"user"`
	// KeyFile is a private key (unencrypted; encrypted keys belong in the
	// agent). Empty uses the SSH agent.
	KeyFile   string `json:"key_file,omitempty"`
	MnesiaDir string `json:"mnesia_dir"`
	// Commands override Config.Commands for this host (per field).
	Commands Commands `json:"commands"`
}

// Config is the "ssh" section of migctl's configuration.
type Config struct {
	// KnownHosts is the known_hosts file that host keys are checked
	// against (default ~/.ssh/known_hosts).
	KnownHosts string   `json:"known_hosts"`
	Commands   Commands `json:"commands"` // defaults for every host
	Hosts      []Host   `json:"hosts"`
	// Timeout bounds connecting and each command (default 60s); in the
	// file a Go duration string such as "90s".
	Timeout Duration `json:"timeout"`
}

// Duration is a time.Duration written as "90s" in JSON.
type Duration time.Duration

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timeout: want a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadConfig reads a JSON configuration file.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return c, nil
}

// Runner runs the configured commands over SSH.
type Runner struct {
	cfg     Config
	hostKey ssh.HostKeyCallback
	log     *slog.Logger
	now     func() time.Time
}

// New checks the configuration and loads the known_hosts file.
func New(cfg Config, log *slog.Logger) (*Runner, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = Duration(60 * time.Second)
	}
	if cfg.KnownHosts == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, err
		}
		cfg.KnownHosts = home + "/.ssh/known_hosts"
	}
	cb, err := knownhosts.New(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", cfg.KnownHosts, err)
	}
	for i, h := range cfg.Hosts {
		if h.Node == "" || h.User == "" {
			return nil, fmt.Errorf("ssh host %d: node and user are required", i)
		}
		c := merged(cfg.Commands, h.Commands)
		for _, nt := range [][2]string{{"stop", c.Stop}, {"move_aside", c.MoveAside}, {"start", c.Start}} {
			name, tpl := nt[0], nt[1]
			if tpl == "" {
				return nil, fmt.Errorf("ssh host %s: no %s command", h.Node, name)
			}
			if _, err := parse(tpl); err != nil {
				return nil, fmt.Errorf("ssh host %s: %s command: %w", h.Node, name, err)
			}
		}
	}
	return &Runner{cfg: cfg, hostKey: cb, log: log.With("component", "ssh"), now: time.Now}, nil
}

func merged(def, over Commands) Commands {
	if over.Stop == "" {
		over.Stop = def.Stop
	}
	if over.MoveAside == "" {
		over.MoveAside = def.MoveAside
	}
	if over.Start == "" {
		over.Start = def.Start
	}
	return over
}

func parse(tpl string) (*template.Template, error) {
	return template.New("cmd").Option("missingkey=error").Funcs(template.FuncMap{"quote": shellQuote}).Parse(tpl)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (r *Runner) host(node string) (Host, error) {
	for _, h := range r.cfg.Hosts {
		if h.Node == node {
			if h.Addr == "" {
				_, host, _ := strings.Cut(node, "@")
				h.Addr = net.JoinHostPort(host, "22")
			}
			h.Commands = merged(r.cfg.Commands, h.Commands)
			return h, nil
		}
	}
	return Host{}, fmt.Errorf("%w %s", ErrNoHost, node)
}

// Step is one command of Restart.
type Step string

// The steps of an out-of-band restart.
const (
	StepStop      Step = "stop"
	StepMoveAside Step = "move_aside"
	StepStart     Step = "start"
)

// Command renders the command a step would run on node's host.
func (r *Runner) Command(node string, step Step) (string, error) {
	h, err := r.host(node)
	if err != nil {
		return "", err
	}
	tpl := map[Step]string{StepStop: h.Commands.Stop, StepMoveAside: h.Commands.MoveAside, StepStart: h.Commands.Start}[step]
	t, err := parse(tpl)
	if err != nil {
		return "", err
	}
	_, hostPart, _ := strings.Cut(node, "@")
	var b bytes.Buffer
	err = t.Execute(&b, map[string]string{"Node": node, "Host": hostPart, "MnesiaDir": h.MnesiaDir,
		"Stamp": r.now().UTC().Format("20060102T150405Z")})
	return b.String(), err
}

// Run runs one step on node's host and returns its combined output.
func (r *Runner) Run(ctx context.Context, node string, step Step) (string, error) {
	cmd, err := r.Command(node, step)
	if err != nil {
		return "", err
	}
	return r.Exec(ctx, node, cmd)
}

// Exec runs an arbitrary command on node's host (used by Run, and by
// tests and the CLI's connectivity check).
func (r *Runner) Exec(ctx context.Context, node, cmd string) (string, error) {
	h, err := r.host(node)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(r.cfg.Timeout))
	defer cancel()
	client, err := r.dial(ctx, h)
	if err != nil {
		return "", err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh %s: session: %w", h.Addr, err)
	}
	defer sess.Close()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	r.log.Info("ssh run", "node", node, "addr", h.Addr, "cmd", cmd)
	go func() {
		b, err := sess.CombinedOutput(cmd)
		done <- result{b, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		client.Close()
		return "", fmt.Errorf("ssh %s: %q: %w", h.Addr, cmd, ctx.Err())
	}
	out := string(res.out)
	if res.err != nil {
		return out, fmt.Errorf("%w on %s: %q: %v: %s", ErrCommand, h.Addr, cmd, res.err, strings.TrimSpace(out))
	}
	return out, nil
}

func (r *Runner) dial(ctx context.Context, h Host) (*ssh.Client, error) {
	auth, closeAuth, err := authFor(h)
	if err != nil {
		return nil, err
	}
	defer closeAuth()
	cfg := &ssh.ClientConfig{
		User:            h.User,
		Auth:            []ssh.AuthMethod{auth},
		HostKeyCallback: r.checkHostKey,
		Timeout:         time.Duration(r.cfg.Timeout),
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", h.Addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, h.Addr, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh %s: %w", h.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// checkHostKey wraps knownhosts with errors an operator can act on.
func (r *Runner) checkHostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := r.hostKey(hostname, remote, key)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		if len(ke.Want) == 0 {
			return fmt.Errorf("%w: %s (%s %s) is not in %s; check the fingerprint out of band, then add it (ssh-keyscan)",
				ErrHostKeyUnknown, hostname, key.Type(), ssh.FingerprintSHA256(key), r.cfg.KnownHosts)
		}
		return fmt.Errorf("%w: %s presented %s %s, %s has another key at line %d: a reinstalled host or a man in the middle; refusing",
			ErrHostKeyChanged, hostname, key.Type(), ssh.FingerprintSHA256(key), r.cfg.KnownHosts, ke.Want[0].Line)
	}
	var re *knownhosts.RevokedError
	if errors.As(err, &re) {
		return fmt.Errorf("%w: %s presented a revoked key", ErrHostKeyChanged, hostname)
	}
	return err
}

func authFor(h Host) (ssh.AuthMethod, func(), error) {
	if h.KeyFile != "" {
		b, err := os.ReadFile(h.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh key %s: %w", h.KeyFile, err)
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh key %s: %w (encrypted keys: load them into ssh-agent)", h.KeyFile, err)
		}
		return ssh.PublicKeys(s), func() {}, nil
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, nil, fmt.Errorf("ssh %s: no key_file and no SSH agent ($SSH_AUTH_SOCK unset)", h.Node)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh agent %s: %w", sock, err)
	}
	return ssh.PublicKeysCallback(agent.NewClient(conn).Signers), func() { conn.Close() }, nil
}

// Restart runs stop, move_aside and start on node's host, in that order,
// and says what it ran (it implements cluster.OutOfBand).
func (r *Runner) Restart(ctx context.Context, node string) (string, error) {
	var done []string
	for _, s := range []Step{StepStop, StepMoveAside, StepStart} {
		cmd, err := r.Command(node, s)
		if err != nil {
			return strings.Join(done, "; "), err
		}
		if _, err := r.Exec(ctx, node, cmd); err != nil {
			return strings.Join(done, "; "), fmt.Errorf("%s: %w", s, err)
		}
		done = append(done, fmt.Sprintf("%s: %s", s, cmd))
	}
	return strings.Join(done, "; "), nil
}
