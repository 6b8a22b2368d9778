// Package metricsserver is the HTTP side of migctl's daemons: Prometheus
// metrics on /metrics and a health document on /healthz.
//
// # Model
//
// The libraries own their metrics (each on a prometheus.Registry of its
// own, nothing global) and their state; they serve nothing. A daemon — the
// `consistency monitor` command — starts a Server over the library's
// registry and health function, and shuts it down when the library's loop
// has returned. So a library test needs no port, and the one listener of
// a process is decided in one place.
//
// /healthz answers 200 with the health function's document as JSON when it
// reports healthy, 503 with the same document otherwise (systemd or a
// load balancer reads the status; an operator reads the body).
package metricsserver
