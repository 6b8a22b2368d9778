package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Alert is one alert of Alertmanager's API v2.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Client posts alerts to one Alertmanager.
type Client struct {
	url  string
	http *http.Client
}

// New returns a client for the Alertmanager at url: its base URL (alerts go
// to URL/api/v2/alerts) or the full URL ending in /api/v2/alerts. A nil hc
// is a client with a 10 s timeout per try.
func New(url string, hc *http.Client) *Client {
	u := strings.TrimRight(url, "/")
	if !strings.HasSuffix(u, "/api/v2/alerts") {
		u += "/api/v2/alerts"
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{url: u, http: hc}
}

// URL is where alerts are posted.
func (c *Client) URL() string { return c.url }

// tries and the wait after try i ((i+1) seconds) are what the monitor has
// always done: enough for an Alertmanager restart, short enough that a
// check is not held up for long when it is down.
const tries = 3

// Post sends the alerts, trying up to three times; it returns the last
// failure (a transport error or a non-2xx status) or ctx's error.
func (c *Client) Post(ctx context.Context, alerts ...Alert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return err
	}
	var last error
	for attempt := 0; attempt < tries; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		last = err
		if attempt == tries-1 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	return last
}
