package backends

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
)

// Scan streams the whole store, calling fn for each batch (Batch.Next is
// the cursor after it, for checkpoints). The node reads ahead while fn
// works, so the node's work, the transfer and ours overlap.
func Scan(ctx context.Context, s Store, batch int, fn func(Batch) error) error {
	return ScanFrom(ctx, s, nil, batch, fn)
}

// ScanParallel streams the whole store as parts streams at once where the
// node can cut the table into parts of its hash slots (Mnesia with a local
// disc_copies/ram_copies copy, an ETS table of type set; see migctl_agent:
// stream_push_parts/6), so that the node encodes on several schedulers;
// elsewhere (DETS, erlmcp's ETS table, an ordered_set; parts < 2) it is
// Scan. fn is called for one batch at a
// time, in arrival order; Batch.Next is nil and Batch.Done false: a
// parallel scan does not resume (use Scan for checkpoints). Every row
// present throughout comes exactly once.
func ScanParallel(ctx context.Context, s Store, batch, parts int, fn func(Batch) error) error {
	if p, ok := s.(interface {
		pushParts(context.Context, int, int, func(Batch) error) error
	}); ok && parts > 1 {
		err := p.pushParts(ctx, batch, parts, fn)
		if !errors.Is(err, errNotPartitionable) {
			return err
		}
	}
	return Scan(ctx, s, batch, fn)
}

// ScanFrom is Scan starting after cursor.
func ScanFrom(ctx context.Context, s Store, cursor Cursor, batch int, fn func(Batch) error) error {
	if p, ok := s.(interface {
		push(context.Context, Cursor, int, func(Batch) error) error
	}); ok {
		return p.push(ctx, cursor, batch, fn)
	}
	return scanPull(ctx, s, cursor, batch, fn)
}

// scanPull requests the next batch while fn works on the current one.
func scanPull(ctx context.Context, s Store, cursor Cursor, batch int, fn func(Batch) error) error {
	type res struct {
		b   Batch
		err error
	}
	next := func(cur Cursor) <-chan res {
		ch := make(chan res, 1)
		go func() {
			b, err := s.Stream(ctx, cur, batch)
			ch <- res{b, err}
		}()
		return ch
	}
	pending := next(cursor)
	for {
		r := <-pending
		if r.err != nil {
			return r.err
		}
		if !r.b.Done {
			pending = next(r.b.Next)
		}
		if err := fn(r.b); err != nil {
			if !r.b.Done {
				<-pending
			}
			return err
		}
		if r.b.Done {
			return nil
		}
	}
}

// pushCredit is how many batches the node may read ahead.
const pushCredit = 3

// pushPieces is the most messages one pushed batch comes in
// (migctl_agent:pieces/1): a subscriber drops what does not fit.
const pushPieces = 16

// push runs a scan with the agent's stream_push: the node reads ahead up
// to pushCredit batches.
func (s *agentStore) push(ctx context.Context, cursor Cursor, batch int, fn func(Batch) error) error {
	if batch <= 0 {
		batch = 1000
	}
	tag := newTag()
	msgs, unsub := s.c.SubscribeKey("migctl_stream", tag, (pushCredit+1)*pushPieces)
	defer unsub()
	if err := s.c.Connect(ctx, s.node); err != nil {
		return err
	}
	down, unwatch := s.c.WatchNode(s.node)
	defer unwatch()
	pid, err := s.agent().StreamPush(ctx, s.node, s.st, cursor, batch, pushCredit, tag)
	if err != nil {
		return s.mapErr(err)
	}
	return s.drain(ctx, pid, tag, msgs, down, fn)
}

// errNotPartitionable: the node cannot cut this table into parts (not an
// ETS-backed hash table); scan it as one stream.
var errNotPartitionable = errors.New("not partitionable")

// pushParts runs parts streams of the whole table at once
// (migctl_agent:stream_push_parts/6) and calls fn for one batch at a time,
// in arrival order.
func (s *agentStore) pushParts(ctx context.Context, batch, parts int, fn func(Batch) error) error {
	if batch <= 0 {
		batch = 1000
	}
	tags := make([][]byte, parts)
	chans := make([]<-chan erl.Term, parts)
	for i := range tags {
		tags[i] = newTag()
		var unsub func()
		chans[i], unsub = s.c.SubscribeKey("migctl_stream", tags[i], (pushCredit+1)*pushPieces)
		defer unsub()
	}
	if err := s.c.Connect(ctx, s.node); err != nil {
		return err
	}
	down, unwatch := s.c.WatchNode(s.node)
	defer unwatch()
	pids, err := s.agent().StreamPushParts(ctx, s.node, s.st, batch, pushCredit, tags)
	if err != nil {
		var re *erl.RPCError
		if errors.As(err, &re) && re.Reason == "not_partitionable" {
			return errNotPartitionable
		}
		return s.mapErr(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.drain(ctx, pid, tags[i], chans[i], down, func(b Batch) error {
				mu.Lock()
				defer mu.Unlock()
				if err := ctx.Err(); err != nil {
					return err
				}
				b.Next, b.Done = nil, false
				return fn(b)
			})
			if errs[i] != nil {
				cancel() // the other parts stop too
			}
		}()
	}
	wg.Wait()
	// The first failure, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

func newTag() []byte {
	var tag [16]byte
	_, _ = rand.Read(tag[:])
	return tag[:]
}

// drain receives one pushed stream's batches, acknowledges each it takes
// and calls fn, until the stream is done, fn fails, or ctx ends (the node
// process is told to stop).
func (s *agentStore) drain(ctx context.Context, pid erl.Pid, tag []byte, msgs <-chan erl.Term, down <-chan struct{}, fn func(Batch) error) error {
	stop := func() { _ = s.agent().Stop(pid, tag) }
	idle := time.NewTimer(time.Minute)
	defer idle.Stop()
	var pending []Row // rows of a batch that came ahead
	pendingBytes := 0
	for {
		var m erl.Term
		select {
		case m = <-msgs:
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-down:
			return &erl.Error{Op: "stream " + s.spec.String(), Node: s.node, Err: erl.ErrNodeDown}
		case <-idle.C:
			stop()
			return &erl.Error{Op: "stream " + s.spec.String(), Node: s.node, Err: erl.ErrTimeout,
				Hint: "the node sent nothing for a minute; is it overloaded?"}
		}
		idle.Reset(time.Minute)
		sm, err := agentapi.ParseStreamMsg(m)
		if err != nil {
			stop()
			return fmt.Errorf("stream %s on %s: %w", s.spec, s.node, err)
		}
		if sm.More {
			// The first rows of a batch, sent apart (migctl_agent:pieces/1).
			rows, err := ParseRows(sm.Bin, 0)
			if err != nil {
				stop()
				return fmt.Errorf("stream %s on %s: %w", s.spec, s.node, err)
			}
			pending = append(pending, rows...)
			pendingBytes += len(sm.Bin)
			continue
		}
		if sm.Failed {
			return s.mapErr(&erl.Error{Op: "stream", Node: s.node, Err: &erl.RPCError{Class: "error", Reason: sm.Reason}})
		}
		var rows []Row
		if sm.Rows {
			rows, err = ParseRows(sm.Bin, 0)
			if len(pending) > 0 {
				rows = append(pending, rows...)
				pending = nil
			}
			if err == nil && len(rows) != sm.N {
				err = fmt.Errorf("%d rows in a batch of %d", len(rows), sm.N)
			}
		} else {
			rows, err = ParseFrames(sm.Bin, sm.N)
		}
		if err != nil {
			stop()
			return fmt.Errorf("stream %s on %s: %w", s.spec, s.node, err)
		}
		b := Batch{Rows: rows, WireBytes: len(sm.Bin) + pendingBytes}
		pendingBytes = 0
		if sm.Done {
			b.Done = true
		} else {
			b.Next = Cursor(sm.Next)
			// Take the batch: the node may read one more ahead.
			_ = s.agent().Ack(pid, tag)
		}
		if err := fn(b); err != nil {
			if !b.Done {
				stop()
			}
			return err
		}
		if b.Done {
			return nil
		}
	}
}
