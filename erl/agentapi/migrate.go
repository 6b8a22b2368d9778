package agentapi

import (
	"context"
	"errors"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// Migrate is the stub of migctl_migrate (erlang/agent/migctl_migrate.erl),
// the node-side half of package migrate. So far it covers the backfill's
// batches (issue 12; the rest of package migrate still calls the module
// itself).
type Migrate struct{ C *erl.Client }

func (s Migrate) mod() module { return module{c: s.C, name: "migctl_migrate"} }

// ErrCursorExpired: the node no longer has the pass the cursor points into
// (the DETS file was reopened, the store server restarted): the pass starts
// again from the beginning (batches are idempotent).
var ErrCursorExpired = errors.New("backfill cursor expired")

// Backfill ops.
const (
	OpForward = "forward" // old store -> new store
	OpReverse = "reverse" // new store -> old store
	OpPrune   = "prune"   // reverse only: delete from the old store what the new one lacks
)

// StepsRequest is one call of migctl_migrate:backfill_steps/9: batches,
// each its own turn of the node's store server, until the pass is done,
// MaxRows were scanned or CallBudget has passed.
type StepsRequest struct {
	Op     string // OpForward, OpReverse or OpPrune
	Cursor []byte // nil to start a pass; else the previous reply's Next
	// Batch is the most rows per batch; TurnBudget is what a batch may
	// take while the application's requests wait behind it (the node
	// sizes batches between the two, see backfill_steps/9).
	Batch      int
	TurnBudget time.Duration
	DryRun     bool
	// StepTimeout bounds one batch.
	StepTimeout time.Duration
	MaxRows     int
	CallBudget  time.Duration
	// Owners are the migration's nodes for a way back to per-node files
	// (each session back to the node that serves it); empty: every row.
	Owners []string
}

// StepsReply sums the call's batches.
type StepsReply struct {
	Scanned, Written, Skipped, Expired, Deleted int64
	// Next is the opaque cursor to pass back; Done: the pass is over.
	Next []byte
	Done bool
}

// BackfillSteps runs req on node. ErrCursorExpired (wrapped) when the pass
// is gone.
func (s Migrate) BackfillSteps(ctx context.Context, node string, req StepsRequest) (StepsReply, error) {
	const fun = "backfill_steps"
	m := s.mod()
	owners := etf.List{}
	for _, n := range req.Owners {
		owners = append(owners, etf.Atom(n))
	}
	t, err := m.call(ctx, node, fun, etf.Atom(req.Op), req.Cursor, req.Batch, req.DryRun,
		int(req.StepTimeout/time.Millisecond), req.MaxRows, int(req.CallBudget/time.Millisecond), owners,
		max(1, int(req.TurnBudget/time.Millisecond)))
	if err != nil {
		var re *erl.RPCError
		if errors.As(err, &re) && re.Reason == "cursor_expired" {
			return StepsReply{}, errors.Join(ErrCursorExpired, err)
		}
		return StepsReply{}, err
	}
	// {ok, Scanned, Written, Skipped, Expired, Deleted, Next, Done}
	if err := m.okN(node, fun, t, 7); err != nil {
		return StepsReply{}, err
	}
	done, ok := t[7].(bool)
	if !ok {
		return StepsReply{}, m.shape(node, fun, t)
	}
	return StepsReply{Scanned: asInt(t[1]), Written: asInt(t[2]), Skipped: asInt(t[3]), Expired: asInt(t[4]),
		Deleted: asInt(t[5]), Next: asBytes(t[6]), Done: done}, nil
}
