package migrate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestThrottle(t *testing.T) {
	now := time.Now()
	base := LoadSample{Node: "n@h", At: now, SchedUtil: 0.2}
	cases := []struct {
		name   string
		s      LoadSample
		want   bool
		reason string
	}{
		{"quiet", base, false, ""},
		{"no sample", LoadSample{}, false, ""},
		{"stale sample", LoadSample{At: now.Add(-time.Minute), SchedUtil: 1}, false, ""},
		{"busy schedulers", LoadSample{Node: "n@h", At: now, SchedUtil: 0.95}, true, "schedulers 95% busy"},
		{"store queue", LoadSample{Node: "n@h", At: now, StoreQueue: 51}, true, "51 application requests queued"},
		{"mnesia queue", LoadSample{Node: "n@h", At: now, MnesiaQueue: 500}, true, "transaction manager queue 500"},
		{"overload", LoadSample{Node: "n@h", At: now, Overloads: 2}, true, "2 overload event(s)"},
		{"run queue", LoadSample{Node: "n@h", At: now, RunQueue: 40}, true, "run queue 40"},
		{"unknown util", LoadSample{Node: "n@h", At: now, SchedUtil: -1}, false, ""},
	}
	for _, c := range cases {
		got, why := Throttle(c.s, Limits{}, now)
		require.Equal(t, c.want, got, c.name)
		require.Contains(t, why, c.reason, c.name)
		// Pure: same input, same answer.
		got2, why2 := Throttle(c.s, Limits{}, now)
		require.Equal(t, got, got2)
		require.Equal(t, why, why2)
	}
	// Limits are honoured.
	th, _ := Throttle(LoadSample{At: now, SchedUtil: 0.95}, Limits{MaxSchedUtil: 0.99}, now)
	require.False(t, th)
}

func TestPrometheusGate(t *testing.T) {
	val, reads := "0.00005", "25000"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/api/v1/query", r.URL.Path)
		q := r.URL.Query().Get("query")
		require.NotEmpty(t, q)
		v := val
		if q == DefaultPromReadsQuery {
			v = reads
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"` + v + `"]}]}}`))
	}))
	defer srv.Close()
	ctx := context.Background()
	v, err := QueryPrometheus(ctx, srv.URL, DefaultPromQuery)
	require.NoError(t, err)
	require.InDelta(t, 0.00005, v, 1e-12)
	g := promGate(ctx, srv.URL, "", "", DefaultMaxReadErrorRate, DefaultMinReads)
	require.True(t, g.OK, g.Value)
	val = "0.002"
	g = promGate(ctx, srv.URL, "", "", DefaultMaxReadErrorRate, DefaultMinReads)
	require.False(t, g.OK, g.Value)
	// A good rate over too few reads is no evidence.
	val, reads = "0", "2"
	g = promGate(ctx, srv.URL, "", "", DefaultMaxReadErrorRate, DefaultMinReads)
	require.False(t, g.OK, g.Value)
	require.Contains(t, g.Value, "not enough reads to judge")
	g = promGate(ctx, srv.URL, "", "", DefaultMaxReadErrorRate, -1)
	require.True(t, g.OK, "no minimum: %s", g.Value)
	g = promGate(ctx, "http://127.0.0.1:1", "", "", DefaultMaxReadErrorRate, DefaultMinReads)
	require.False(t, g.OK)
	require.Contains(t, g.Value, "prometheus")
}
