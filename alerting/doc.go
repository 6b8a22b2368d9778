// Package alerting sends alerts to Prometheus Alertmanager through its API
// v2 (POST /api/v2/alerts, a JSON array of alerts).
//
// # Model
//
// The package knows Alertmanager's wire format and nothing of what is
// alerted on: a library decides that something deserves an alert and
// builds the Alert (consistency.MismatchAlert.Alertmanager for the
// consistency monitor); the daemon that owns the network (cmd/migctl's
// `consistency monitor`) posts it with a Client. Keeping the HTTP client
// out of the libraries keeps their tests free of servers and lets the
// daemon decide where alerts go.
//
// A post is tried three times, waiting 1 s and then 2 s between tries, so
// a restarting Alertmanager does not lose the alert; the caller's context
// bounds the whole. Alertmanager deduplicates by labels, so a repeated post
// is harmless.
package alerting
