package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestCommittedBeamsMatchSources recompiles every .erl here the way
// `make agent` does and checks that the committed .beam is that build, byte
// for byte. The binary embeds the .beam files, not the sources: a source
// edited without `make agent` would ship the old code under the new
// source's name, and no other test would notice (they push what is
// embedded). erlc +deterministic leaves no path or time in the beam, so the
// same OTP gives the same bytes.
func TestCommittedBeamsMatchSources(t *testing.T) {
	erlc, err := exec.LookPath("erlc")
	if err != nil {
		t.Skip("erlc is not on PATH (Debian: erlang-base); the committed beams are not checked")
	}
	srcs, err := filepath.Glob("*.erl")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no .erl sources beside the agent package (%v)", err)
	}
	out := t.TempDir()
	for _, src := range srcs {
		if b, err := exec.Command(erlc, "+deterministic", "-Wall", "-o", out, src).CombinedOutput(); err != nil {
			t.Fatalf("erlc %s: %v\n%s", src, err, b)
		}
	}
	var want []string
	for _, src := range srcs {
		want = append(want, strings.TrimSuffix(src, ".erl"))
	}
	var have []string
	for _, m := range Modules() {
		have = append(have, m.Name)
	}
	sort.Strings(want)
	if strings.Join(have, " ") != strings.Join(want, " ") {
		t.Fatalf("embedded modules %v, sources %v: every source needs its committed beam and no beam may lack its source (run `make agent`)", have, want)
	}
	for _, m := range Modules() {
		fresh, err := os.ReadFile(filepath.Join(out, m.Name+".beam"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, m.Beam) {
			t.Errorf("%s.beam is not the build of %s.erl: run `make agent` and commit the beam", m.Name, m.Name)
		}
	}
}
