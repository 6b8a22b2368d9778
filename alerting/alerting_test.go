package alerting_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/alerting"
)

// fakeAM is a stand-in Alertmanager that answers the first fail posts
// with 503 and records the alerts of the rest.
type fakeAM struct {
	mu     sync.Mutex
	fail   int
	posts  int
	alerts []alerting.Alert
	paths  []string
}

func (f *fakeAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.posts++
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	if f.posts <= f.fail {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	var as []alerting.Alert
	if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.alerts = append(f.alerts, as...)
}

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://am:9093":                "http://am:9093/api/v2/alerts",
		"http://am:9093/":               "http://am:9093/api/v2/alerts",
		"http://am:9093/api/v2/alerts":  "http://am:9093/api/v2/alerts",
		"http://am:9093/api/v2/alerts/": "http://am:9093/api/v2/alerts",
		"https://x/prefix":              "https://x/prefix/api/v2/alerts",
	} {
		require.Equal(t, want, alerting.New(in, nil).URL(), in)
	}
}

// A post that fails twice is tried again and arrives once, whole.
func TestPostRetries(t *testing.T) {
	am := &fakeAM{fail: 2}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	a := alerting.Alert{Labels: map[string]string{"alertname": "X", "severity": "critical"},
		Annotations: map[string]string{"summary": "s"}, StartsAt: time.Now().UTC()}
	require.NoError(t, alerting.New(srv.URL, nil).Post(context.Background(), a))
	am.mu.Lock()
	defer am.mu.Unlock()
	require.Equal(t, 3, am.posts)
	require.Equal(t, []string{"POST /api/v2/alerts", "POST /api/v2/alerts", "POST /api/v2/alerts"}, am.paths)
	require.Len(t, am.alerts, 1)
	require.Equal(t, a.Labels, am.alerts[0].Labels)
	require.True(t, am.alerts[0].EndsAt.IsZero(), "endsAt is omitted: Alertmanager sets it")
}

// Three failures: the last status is the error.
func TestPostGivesUp(t *testing.T) {
	am := &fakeAM{fail: 5}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	err := alerting.New(srv.URL, nil).Post(context.Background(), alerting.Alert{Labels: map[string]string{"alertname": "X"}})
	require.ErrorContains(t, err, "503")
	am.mu.Lock()
	defer am.mu.Unlock()
	require.Equal(t, 3, am.posts)
}

// A cancelled context stops the tries.
func TestPostCancelled(t *testing.T) {
	am := &fakeAM{fail: 5}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := alerting.New(srv.URL, nil).Post(ctx, alerting.Alert{Labels: map[string]string{"alertname": "X"}})
	require.ErrorIs(t, err, context.Canceled)
}
