package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/api"
)

// DefaultPromQuery is the phase3 gate's query: read errors per read over the
// last 5 minutes (the runbook watches rate(erlmcp_session_read_errors_total[5m])).
const DefaultPromQuery = `sum(rate(erlmcp_session_read_errors_total[5m])) / sum(rate(erlmcp_session_reads_total[5m]))`

// DefaultPromReadsQuery counts the reads DefaultPromQuery's rate is taken
// over, for the gate's minimum (ChangeOptions.MinReads).
const DefaultPromReadsQuery = `sum(increase(erlmcp_session_reads_total[5m]))`

// QueryPrometheus evaluates an instant query that returns one number.
//
// It uses client_golang's API client (package api: address handling,
// round tripper, context) for the request and decodes the documented
// /api/v1/query answer itself, because the typed v1 package needs
// json-iterator, whose go.sum entries the module does not have yet; with
// them, v1.NewAPI(c).Query is a drop-in replacement for the decoding below.
func QueryPrometheus(ctx context.Context, base, query string) (float64, error) {
	c, err := api.NewClient(api.Config{Address: base})
	if err != nil {
		return 0, fmt.Errorf("--prometheus %q: %w", base, err)
	}
	u := c.URL("/api/v1/query", nil)
	q := url.Values{}
	q.Set("query", query)
	q.Set("time", strconv.FormatFloat(float64(time.Now().UnixMilli())/1000, 'f', 3, 64))
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, body, err := c.Do(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("prometheus: %w", err)
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("prometheus: %s: %w", resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s %s", resp.Status, r.Error)
	}
	var val []any
	switch r.Data.ResultType {
	case "scalar":
		if err := json.Unmarshal(r.Data.Result, &val); err != nil {
			return 0, err
		}
	case "vector":
		var vec []struct {
			Value []any `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return 0, err
		}
		if len(vec) == 0 {
			return 0, fmt.Errorf("prometheus: the query returned no series (%s)", query)
		}
		val = vec[0].Value
	default:
		return 0, fmt.Errorf("prometheus: unexpected result type %q", r.Data.ResultType)
	}
	if len(val) != 2 {
		return 0, fmt.Errorf("prometheus: unexpected value %v", val)
	}
	s, _ := val[1].(string)
	return strconv.ParseFloat(s, 64)
}

func promGate(ctx context.Context, base, query, readsQuery string, max float64, minReads int64) Gate {
	if query == "" {
		query = DefaultPromQuery
	}
	if readsQuery == "" {
		readsQuery = DefaultPromReadsQuery
	}
	g := Gate{Name: "read_error_rate"}
	if minReads > 0 {
		n, err := QueryPrometheus(ctx, base, readsQuery)
		if err != nil {
			g.Value = err.Error()
			return g
		}
		if n < float64(minReads) {
			g.Value = fmt.Sprintf("not enough reads to judge: %.0f reads in the window, %d needed (--min-reads; from Prometheus: %s)", n, minReads, readsQuery)
			return g
		}
	}
	v, err := QueryPrometheus(ctx, base, query)
	if err != nil {
		g.Value = err.Error()
		return g
	}
	g.OK = v < max
	g.Value = fmt.Sprintf("%.4f%% (limit %.4f%%, from Prometheus: %s)", v*100, max*100, query)
	return g
}
