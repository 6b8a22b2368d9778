// Package erltest runs real Erlang from Go tests, so that the term and
// session packages are checked against the VM rather than against our own
// reading of the external term format.
//
// Every Erlang start costs about a second, so tests batch all their cases
// into one or two escript runs that exchange files in a temporary
// directory: one file per term, named after the case.
package erltest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Available reports whether erl and escript are on PATH.
func Available() bool {
	for _, bin := range []string{"erl", "escript"} {
		if _, err := exec.LookPath(bin); err != nil {
			return false
		}
	}
	return true
}

// Escript runs script (a path) with args and returns its standard output.
// It skips the test when Erlang is not installed (CI has it, so there the
// tests always run) and fails it when the script exits non-zero, showing
// both output streams.
func Escript(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	if !Available() {
		t.Skip("erl/escript not on PATH; skipping the comparison with real Erlang")
	}
	abs, err := filepath.Abs(script)
	if err != nil {
		t.Fatalf("erltest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "escript", append([]string{abs}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("erltest: escript %s %s: %v\nstdout:\n%s\nstderr:\n%s",
			filepath.Base(script), strings.Join(args, " "), err, tail(stdout.String()), tail(stderr.String()))
	}
	return stdout.Bytes()
}

// tail keeps error output readable when a script prints a lot.
func tail(s string) string {
	const max = 8000
	if len(s) > max {
		return "...\n" + s[len(s)-max:]
	}
	return s
}

// ReadDir returns the files of dir whose names end in ext, keyed by name
// without the extension.
func ReadDir(t testing.TB, dir, ext string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("erltest: %v", err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("erltest: %v", err)
		}
		out[strings.TrimSuffix(e.Name(), ext)] = b
	}
	return out
}

// WriteFile writes data to dir/name, creating dir as needed.
func WriteFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("erltest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatalf("erltest: %v", err)
	}
}

// Results parses the "ok NAME ..." / "FAIL NAME reason" lines the check
// scripts print. It fails the test for every FAIL line and returns the
// words after "ok NAME" for each passing case.
func Results(t testing.TB, out []byte) map[string][]string {
	t.Helper()
	ok := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "ok":
			ok[f[1]] = f[2:]
		case len(f) >= 1 && f[0] == "FAIL":
			t.Errorf("erlang: %s", line)
		}
	}
	return ok
}
