package testkit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHDPath is where Debian's openssh-server puts sshd.
const SSHDPath = "/usr/sbin/sshd"

// SSHD is a real OpenSSH server started by a test on a loopback port, with
// its own host key and one authorized client key, both generated for the
// test. It runs as the test's user and is stopped (by pid) at cleanup.
type SSHD struct {
	Addr string // 127.0.0.1:port
	User string
	Dir  string
	// HostKey is the server's public host key; KnownHostsLine is the
	// known_hosts line for Addr.
	HostKey        ssh.PublicKey
	KnownHostsLine string
	// ClientKeyFile is an unencrypted private key the server accepts;
	// ClientSigner is the same key.
	ClientKeyFile string
	ClientSigner  ssh.Signer
	Log           string
	cmd           *exec.Cmd
}

// StartSSHD starts sshd, or skips the test when openssh-server is not
// installed (the Makefile's deps target installs it).
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		t.Skipf("sshd not installed (%s): apt-get install openssh-server", SSHDPath)
	}
	dir := t.TempDir()
	// sshd refuses keys in group/world-readable directories.
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Privilege separation needs this directory when sshd runs as root.
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	d := &SSHD{User: u.Username, Dir: dir, Log: filepath.Join(dir, "sshd.log")}
	hostSigner, hostFile := writeKey(t, dir, "host_ed25519")
	d.HostKey = hostSigner.PublicKey()
	d.ClientSigner, d.ClientKeyFile = writeKey(t, dir, "client_ed25519")
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, ssh.MarshalAuthorizedKey(d.ClientSigner.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d.KnownHostsLine = knownhosts.Line([]string{knownhosts.Normalize(d.Addr)}, d.HostKey)
	conf := filepath.Join(dir, "sshd_config")
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowUsers %s
LogLevel VERBOSE
UseDNS no
`, port, hostFile, auth, u.Username)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	d.cmd = cmd
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.Log)
			t.Fatalf("sshd did not listen on %s:\n%s", d.Addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is sshd's process id.
func (d *SSHD) Pid() int { return d.cmd.Process.Pid }

// writeKey generates an ed25519 key and writes it in OpenSSH format.
func writeKey(t testing.TB, dir, name string) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "migctl test "+name)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}
