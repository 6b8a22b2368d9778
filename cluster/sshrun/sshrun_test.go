package sshrun_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/erlmcp/migctl/cluster"
	"github.com/erlmcp/migctl/cluster/sshrun"
	"github.com/erlmcp/migctl/testkit"
)

var _ cluster.OutOfBand = (*sshrun.Runner)(nil)

const node = "erlmcp1@127.0.0.1"

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func config(t *testing.T, d *testkit.SSHD, knownHostsLine string) (sshrun.Config, string) {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(knownHostsLine+"\n"), 0o600))
	mdir := filepath.Join(t.TempDir(), "Mnesia.erlmcp1")
	require.NoError(t, os.MkdirAll(mdir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(mdir, "schema.DAT"), []byte("old"), 0o644))
	return sshrun.Config{
		KnownHosts: kh,
		Commands: sshrun.Commands{
			Stop:      "touch {{quote .MnesiaDir}}.stopped",
			MoveAside: "mv {{quote .MnesiaDir}} {{quote .MnesiaDir}}.migctl-{{.Stamp}}",
			Start:     "mkdir {{quote .MnesiaDir}} && echo {{.Node}} > {{quote .MnesiaDir}}/started",
		},
		Hosts: []sshrun.Host{{Node: node, Addr: d.Addr, User: d.User, KeyFile: d.ClientKeyFile, MnesiaDir: mdir}},
	}, mdir
}

func TestRestartOverRealSSHD(t *testing.T) {
	d := testkit.StartSSHD(t)
	cfg, mdir := config(t, d, d.KnownHostsLine)
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)

	out, err := r.Exec(tctx(t), node, "echo hello")
	require.NoError(t, err)
	if out != "hello\n" {
		b, _ := os.ReadFile(d.Log)
		t.Fatalf("out %q\n%s", out, b)
	}

	what, err := r.Restart(tctx(t), node)
	require.NoError(t, err)
	require.Contains(t, what, "move_aside: mv")
	require.FileExists(t, mdir+".stopped")
	b, err := os.ReadFile(filepath.Join(mdir, "started"))
	require.NoError(t, err)
	require.Equal(t, node+"\n", string(b))
	moved, _ := filepath.Glob(mdir + ".migctl-*")
	require.Len(t, moved, 1)
	old, err := os.ReadFile(filepath.Join(moved[0], "schema.DAT"))
	require.NoError(t, err)
	require.Equal(t, "old", string(old), "the old Mnesia directory is kept")

	// A failing command is reported with its output.
	_, err = r.Exec(tctx(t), node, "echo boom >&2; exit 3")
	require.ErrorIs(t, err, sshrun.ErrCommand)
	require.Contains(t, err.Error(), "boom")

	// Quoting: a directory name with a quote and a space stays one word.
	cmd, err := r.Command(node, sshrun.StepMoveAside)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(cmd, "mv '"))
}

func TestAgentAuth(t *testing.T) {
	d := testkit.StartSSHD(t)
	cfg, _ := config(t, d, d.KnownHostsLine)
	cfg.Hosts[0].KeyFile = ""
	// An SSH agent holding the authorized key, on a socket of our own.
	kr := agent.NewKeyring()
	_, priv, err := loadPriv(d.ClientKeyFile)
	require.NoError(t, err)
	require.NoError(t, kr.Add(agent.AddedKey{PrivateKey: priv}))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = agent.ServeAgent(kr, c); c.Close() }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	out, err := r.Exec(tctx(t), node, "echo via-agent")
	require.NoError(t, err)
	require.Equal(t, "via-agent\n", out)

	// Without the agent and without a key file: a clear error.
	t.Setenv("SSH_AUTH_SOCK", "")
	_, err = r.Exec(tctx(t), node, "true")
	require.ErrorContains(t, err, "no SSH agent")
}

func loadPriv(f string) (ssh.Signer, any, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, nil, err
	}
	k, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, nil, err
	}
	s, err := ssh.NewSignerFromKey(k)
	return s, k, err
}

func TestUnknownHostKeyRefused(t *testing.T) {
	d := testkit.StartSSHD(t)
	// known_hosts knows some other host only.
	other := otherKey(t)
	cfg, mdir := config(t, d, knownhosts.Line([]string{"[10.0.0.1]:22"}, other))
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	_, err = r.Restart(tctx(t), node)
	require.ErrorIs(t, err, sshrun.ErrHostKeyUnknown)
	require.NoFileExists(t, mdir+".stopped", "nothing ran")
}

func TestChangedHostKeyRefused(t *testing.T) {
	d := testkit.StartSSHD(t)
	// known_hosts has another key for this very address.
	cfg, mdir := config(t, d, knownhosts.Line([]string{knownhosts.Normalize(d.Addr)}, otherKey(t)))
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	_, err = r.Restart(tctx(t), node)
	require.ErrorIs(t, err, sshrun.ErrHostKeyChanged)
	require.False(t, errors.Is(err, sshrun.ErrHostKeyUnknown))
	require.NoFileExists(t, mdir+".stopped", "nothing ran")
}

func TestWrongClientKeyRefused(t *testing.T) {
	d := testkit.StartSSHD(t)
	cfg, _ := config(t, d, d.KnownHostsLine)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "wrong")
	require.NoError(t, os.WriteFile(f, pemEncode(blk), 0o600))
	cfg.Hosts[0].KeyFile = f
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	_, err = r.Exec(tctx(t), node, "true")
	require.ErrorContains(t, err, "unable to authenticate")
}

func TestConfigValidation(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, nil, 0o600))
	_, err := sshrun.New(sshrun.Config{KnownHosts: kh, Hosts: []sshrun.Host{{Node: node, User: "u"}}}, nil)
	require.ErrorContains(t, err, "no stop command")
	_, err = sshrun.New(sshrun.Config{KnownHosts: filepath.Join(t.TempDir(), "missing")}, nil)
	require.Error(t, err, "a missing known_hosts file is an error, never a skip")
	f := filepath.Join(t.TempDir(), "ssh.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"known_hosts": "`+kh+`", "timeout": "90s",
	  "commands": {"stop": "a", "move_aside": "b", "start": "c"},
	  "hosts": [{"node": "`+node+`", "user": "erlmcp", "mnesia_dir": "/var/lib/erlmcp/mnesia",
	             "commands": {"start": "systemctl start erlmcp"}}]}`), 0o600))
	cfg, err := sshrun.LoadConfig(f)
	require.NoError(t, err)
	require.Equal(t, sshrun.Duration(90*time.Second), cfg.Timeout)
	r, err := sshrun.New(cfg, nil)
	require.NoError(t, err)
	c, err := r.Command(node, sshrun.StepStart)
	require.NoError(t, err)
	require.Equal(t, "systemctl start erlmcp", c)
	c, err = r.Command(node, sshrun.StepStop)
	require.NoError(t, err)
	require.Equal(t, "a", c)
	_, err = r.Command("other@host", sshrun.StepStop)
	require.ErrorIs(t, err, sshrun.ErrNoHost)
}

func otherKey(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	return k
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
