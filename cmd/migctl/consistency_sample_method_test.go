package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// --sample-method: every method package consistency has, under its own
// name; auto and the empty value are SampleAuto; anything else is exit 2
// naming the accepted values.
func TestParseSampleMethod(t *testing.T) {
	for in, want := range map[string]consistency.SampleMethod{
		"auto":         consistency.SampleAuto,
		"":             consistency.SampleAuto,
		"slots":        consistency.SampleSlots,
		"slots-lookup": consistency.SampleSlotsLookup,
		"dets-slots":   consistency.SampleDETSSlots,
		"hash-ranges":  consistency.SampleHashRanges,
	} {
		got, err := parseSampleMethod(in)
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, got, "%q", in)
	}
	for _, bad := range []string{"bogus", "Slots", "slot", "file-slots", "hash_ranges", " auto"} {
		_, err := parseSampleMethod(bad)
		require.Error(t, err, "%q accepted", bad)
		require.Equal(t, cliutil.ExitUsage, exitCode(err), "%q", bad)
		require.ErrorContains(t, err, strconv.Quote(bad))
		require.ErrorContains(t, err, "want auto, slots, dets-slots or hash-ranges")
	}
}

// The binary refuses a bogus --sample-method with exit 2 before it
// contacts a node: the node given cannot be reached (nothing listens on its
// EPMD port), which with an accepted method is exit 3. Needs no Erlang.
func TestConsistencyCheckSampleMethodFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	require.NoError(t, l.Close())

	check := func(method string) (code int, stderr string) {
		cmd := exec.Command(binPath, "--nodes", "nobody@127.0.0.1", "--epmd-port", closedPort, "--timeout", "5s",
			"consistency", "check", "--source", "dets", "--target", "mnesia", "--sample-method", method)
		cmd.Env = []string{
			"HOME=" + t.TempDir(),
			"PATH=" + os.Getenv("PATH"),
			"MIGCTL_JOURNAL=" + filepath.Join(t.TempDir(), "journal.db"),
			"MIGCTL_COOKIE=not-used",
		}
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		require.Empty(t, so.String(), "--sample-method %s", method)
		return code, se.String()
	}

	code, stderr := check("bogus")
	require.Equal(t, cliutil.ExitUsage, code, stderr)
	require.Contains(t, stderr, `--sample-method "bogus": want auto, slots, dets-slots or hash-ranges`)
	require.NotContains(t, stderr, "nobody@127.0.0.1", "a node was contacted")

	for _, ok := range []string{"auto", "slots", "slots-lookup", "dets-slots", "hash-ranges"} {
		code, stderr := check(ok)
		require.Equal(t, cliutil.ExitUnreachable, code, "--sample-method %s: %s", ok, stderr)
		require.Contains(t, stderr, "nobody@127.0.0.1")
	}
}
