package backends

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// PingResult is what `migctl ping` reports for one node.
type PingResult struct {
	Node          string  `json:"node"`
	Reachable     bool    `json:"reachable"`
	Error         string  `json:"error,omitempty"`
	Hint          string  `json:"hint,omitempty"`
	OTPRelease    string  `json:"otp_release,omitempty"`
	MnesiaRunning bool    `json:"mnesia_running"`
	RoundTripMs   float64 `json:"round_trip_ms"`
	Stores        []Info  `json:"stores,omitempty"`
}

// Ping connects to node, measures a round trip, and describes the given
// stores there. It never fails as a whole: an unreachable node is a result.
func Ping(ctx context.Context, c *erl.Client, node string, specs []Spec) PingResult {
	r := PingResult{Node: node}
	fail := func(err error) PingResult {
		r.Error = err.Error()
		if e, ok := err.(*erl.Error); ok {
			r.Error = fmt.Sprintf("%s: %v", e.Op, e.Err)
			r.Hint = e.Hint
		}
		return r
	}
	if err := c.Connect(ctx, node); err != nil {
		return fail(err)
	}
	r.Reachable = true
	n := agentapi.Node{C: c}
	start := time.Now()
	rel, err := n.OTPRelease(ctx, node)
	if err != nil {
		return fail(err)
	}
	r.RoundTripMs = float64(time.Since(start).Microseconds()) / 1000
	r.OTPRelease = rel
	// A node without mnesia's application loaded answers with an error:
	// that is "not running", not a failed ping.
	r.MnesiaRunning, _ = n.MnesiaRunning(ctx, node)
	for _, sp := range specs {
		if sp.Kind == KindMnesia && !r.MnesiaRunning {
			r.Stores = append(r.Stores, Info{Spec: sp, Node: node})
			continue
		}
		s, err := Open(c, node, sp)
		if err != nil {
			continue
		}
		info, err := s.Describe(ctx)
		switch {
		case errors.Is(err, ErrDETSOpening):
			// The table is there, it cannot answer yet: say so rather
			// than leave it out (a node restarting after a crash).
			info = Info{Spec: sp, Node: node, Exists: true, Opening: true}
		case err != nil:
			info.Layout = err.Error()
		}
		r.Stores = append(r.Stores, info)
	}
	return r
}
