package metricsserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/metricsserver"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestServesRegistryAndHealth(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "migctl_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	var healthy atomic.Bool
	healthy.Store(true)
	s, err := metricsserver.Start(metricsserver.Options{Addr: "127.0.0.1:0", Registry: reg,
		Health: func() (any, bool) {
			return map[string]any{"status": map[bool]string{true: "ok", false: "failing"}[healthy.Load()]}, healthy.Load()
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	require.True(t, strings.HasPrefix(s.URL(), "http://127.0.0.1:"), s.URL())

	code, body := get(t, s.URL())
	require.Equal(t, 200, code)
	require.Contains(t, body, "\nmigctl_test_things_total 3\n")

	code, body = get(t, "http://"+s.Addr()+"/healthz")
	require.Equal(t, 200, code)
	var doc map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Equal(t, "ok", doc["status"])

	healthy.Store(false)
	code, body = get(t, "http://"+s.Addr()+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Equal(t, "failing", doc["status"])

	require.NoError(t, s.Shutdown(context.Background()))
	_, err = http.Get(s.URL())
	require.Error(t, err, "still serving after Shutdown")
}

func TestAddressInUse(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := metricsserver.Start(metricsserver.Options{Addr: "127.0.0.1:0", Registry: reg})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	_, err = metricsserver.Start(metricsserver.Options{Addr: s.Addr(), Registry: reg})
	require.ErrorContains(t, err, "listen "+s.Addr())
	code, _ := get(t, "http://"+s.Addr()+"/healthz")
	require.Equal(t, 404, code, "no Health: no /healthz")
}
