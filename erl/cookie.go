package erl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CookieSource says where LoadCookie found the cookie, for messages; it never
// holds the cookie itself.
type CookieSource string

// LoadCookie finds the Erlang cookie, in this order: the file given (the
// --cookie-file flag), the file named by MIGCTL_COOKIE_FILE, the value of
// MIGCTL_COOKIE, and ~/.erlang.cookie. The cookie is never taken from argv.
// getenv is os.Getenv in production and a map lookup in tests.
func LoadCookie(file string, getenv func(string) string) (string, CookieSource, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	read := func(p string, src CookieSource) (string, CookieSource, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", "", fmt.Errorf("%w: read cookie file %s: %v", ErrNoCookie, p, err)
		}
		c := strings.TrimSpace(string(b))
		if c == "" {
			return "", "", fmt.Errorf("%w: cookie file %s is empty", ErrNoCookie, p)
		}
		return c, src, nil
	}
	if file != "" {
		return read(file, CookieSource("file "+file))
	}
	if p := getenv("MIGCTL_COOKIE_FILE"); p != "" {
		return read(p, CookieSource("MIGCTL_COOKIE_FILE "+p))
	}
	if v := strings.TrimSpace(getenv("MIGCTL_COOKIE")); v != "" {
		return v, "MIGCTL_COOKIE", nil
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if home != "" {
		p := filepath.Join(home, ".erlang.cookie")
		if _, err := os.Stat(p); err == nil {
			return read(p, CookieSource(p))
		}
	}
	return "", "", fmt.Errorf("%w: give --cookie-file, MIGCTL_COOKIE_FILE or MIGCTL_COOKIE, or create ~/.erlang.cookie", ErrNoCookie)
}
