package cluster

import (
	"context"
	"fmt"
	"time"
)

// OutOfBand restarts a node without going through Erlang distribution.
// Package cluster/sshrun implements it over SSH with the operator's
// command templates.
type OutOfBand interface {
	// Restart stops node, moves its Mnesia directory aside (keeping it as
	// a backup) and starts the node again with an empty one. It returns a
	// description of what it ran.
	Restart(ctx context.Context, node string) (string, error)
}

// restartOutOfBand restarts a loser out of band, waits for it to come back
// and makes it rejoin the cluster from the winners: with an empty Mnesia
// directory it takes the schema and every table copy from them.
func (cl *Cluster) restartOutOfBand(ctx context.Context, node string, opts ExecuteOptions, winners []string) (string, error) {
	what, err := opts.OutOfBand.Restart(ctx, node)
	if err != nil {
		return "", fmt.Errorf("out-of-band restart of %s: %w", node, err)
	}
	deadline := time.Now().Add(opts.WaitTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := cl.c.Connect(cctx, node)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not come back after the out-of-band restart: %w", node, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	steps, err := cl.join(ctx, node, winners, opts.WaitTimeout)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %s; rejoined: %s", node, what, steps), nil
}
