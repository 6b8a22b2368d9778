package metricsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HealthFunc returns the /healthz document and whether the daemon is
// healthy (200) or not (503).
type HealthFunc func() (doc any, healthy bool)

// Options configure a Server.
type Options struct {
	// Addr is host:port to listen on (port 0: any free port).
	Addr string
	// Registry is served on /metrics; promhttp's own error counters are
	// registered on it too.
	Registry *prometheus.Registry
	// Health answers /healthz; nil serves no /healthz.
	Health HealthFunc
	// Log receives the serve error, if any; nil discards.
	Log *slog.Logger
}

// Server serves one registry and one health function.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// Start listens on o.Addr and serves in the background until Shutdown.
func Start(o Options) (*Server, error) {
	if o.Registry == nil {
		return nil, errors.New("metricsserver: Registry is required")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", o.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	if o.Health != nil {
		mux.HandleFunc("/healthz", healthz(o.Health))
	}
	s := &Server{ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address served on (the real port when Options.Addr had 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the http URL of /metrics, for an alert's generatorURL.
func (s *Server) URL() string { return "http://" + s.Addr() + "/metrics" }

// Shutdown stops accepting, lets requests in flight finish (or ctx end),
// and waits for the serving goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	return err
}

func healthz(h HealthFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		doc, ok := h()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(doc)
	}
}
