package cliutil

import (
	"context"
	"io"
	"log/slog"
)

// ProgressMessage is the message of Progress's log lines, so a caller can
// list it among the messages NewLogger always shows.
const ProgressMessage = "progress"

// NewLogger builds migctl's stderr logger: format "text" or "json" (one
// object a line, for journald or a log shipper), level debug, info, warn or
// error. Records whose message is in always are written whatever the
// level: progress, backfill pauses and heal steps are what an operator
// watching a systemd unit or a CI log needs to see, and the default level
// (warn) used to hide them for minutes.
func NewLogger(w io.Writer, format, level string, always ...string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, Usage("--log-level %q: want debug, info, warn or error", level)
	}
	// The inner handler takes everything; visibleHandler decides.
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	var h slog.Handler
	switch format {
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, Usage("--log-format %q: want text or json", format)
	}
	set := make(map[string]bool, len(always))
	for _, m := range always {
		set[m] = true
	}
	return slog.New(&visibleHandler{inner: h, min: lvl, always: set}), nil
}

// visibleHandler passes records at or above min, and Info records (or
// above) whose message is one of always.
type visibleHandler struct {
	inner  slog.Handler
	min    slog.Level
	always map[string]bool
}

func (h *visibleHandler) Enabled(_ context.Context, l slog.Level) bool {
	// Enabled does not see the message: let Info through when some
	// message is always shown, and decide in Handle.
	return l >= h.min || (len(h.always) > 0 && l >= slog.LevelInfo)
}

func (h *visibleHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.min && !h.always[r.Message] {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h *visibleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &visibleHandler{inner: h.inner.WithAttrs(as), min: h.min, always: h.always}
}

func (h *visibleHandler) WithGroup(name string) slog.Handler {
	return &visibleHandler{inner: h.inner.WithGroup(name), min: h.min, always: h.always}
}
