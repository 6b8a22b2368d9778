package erl

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEPMDUnreachable(t *testing.T) {
	// A port that was free a moment ago: nothing answers there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	e := epmd{port: port, timeout: time.Second}
	_, err = e.portPlease(context.Background(), "a", "127.0.0.1")
	require.ErrorIs(t, err, ErrEPMDUnreachable)
}

func TestSplitNode(t *testing.T) {
	for _, bad := range []string{"", "a", "@h", "a@", "a@b@c"} {
		_, _, err := SplitNode(bad)
		require.ErrorIs(t, err, ErrBadNodeName, bad)
	}
	n, h, err := SplitNode("erlmcp1@prod")
	require.NoError(t, err)
	require.Equal(t, "erlmcp1", n)
	require.Equal(t, "prod", h)
}

func TestLoadCookieOrder(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/c"
	require.NoError(t, writeFile(f, "FROMFILE\n"))
	env := map[string]string{"MIGCTL_COOKIE": "FROMENV", "HOME": dir}
	get := func(k string) string { return env[k] }
	c, _, err := LoadCookie(f, get)
	require.NoError(t, err)
	require.Equal(t, "FROMFILE", c)
	c, src, err := LoadCookie("", get)
	require.NoError(t, err)
	require.Equal(t, "FROMENV", c)
	require.Equal(t, CookieSource("MIGCTL_COOKIE"), src)
	delete(env, "MIGCTL_COOKIE")
	_, _, err = LoadCookie("", get)
	require.ErrorIs(t, err, ErrNoCookie)
	_, _, err = LoadCookie(dir+"/missing", get)
	require.ErrorIs(t, err, ErrNoCookie)
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }
