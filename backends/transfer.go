package backends

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
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
	if cursor == nil {
		cursor = Cursor{}
	}
	tag := newTag()
	msgs, unsub := s.c.SubscribeKey("migctl_stream", tag, (pushCredit+1)*pushPieces)
	defer unsub()
	if err := s.c.Connect(ctx, s.node); err != nil {
		return err
	}
	down, unwatch := s.c.WatchNode(s.node)
	defer unwatch()
	t, err := s.call(ctx, "stream_push", s.term, []byte(cursor), batch, pushCredit, s.c.Self(), tag)
	if err != nil {
		return err
	}
	pid, ok := t[1].(etf.Pid)
	if !ok {
		return fmt.Errorf("stream %s on %s: unexpected reply %v", s.spec, s.node, t)
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
	list := make(etf.List, parts)
	for i := range tags {
		tags[i] = newTag()
		var unsub func()
		chans[i], unsub = s.c.SubscribeKey("migctl_stream", tags[i], (pushCredit+1)*pushPieces)
		defer unsub()
		list[i] = tags[i]
	}
	if err := s.c.Connect(ctx, s.node); err != nil {
		return err
	}
	down, unwatch := s.c.WatchNode(s.node)
	defer unwatch()
	t, err := s.call(ctx, "stream_push_parts", s.term, parts, batch, pushCredit, s.c.Self(), list)
	if err != nil {
		var re *erl.RPCError
		if errors.As(err, &re) && re.Reason == "not_partitionable" {
			return errNotPartitionable
		}
		return err
	}
	pids, _ := t[1].(etf.List)
	if len(pids) != parts {
		return fmt.Errorf("stream %s on %s: unexpected reply %v", s.spec, s.node, t)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := range parts {
		pid, ok := pids[i].(etf.Pid)
		if !ok {
			return fmt.Errorf("stream %s on %s: unexpected reply %v", s.spec, s.node, t)
		}
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
func (s *agentStore) drain(ctx context.Context, pid etf.Pid, tag []byte, msgs <-chan erl.Term, down <-chan struct{}, fn func(Batch) error) error {
	stop := func() { _ = s.c.Send(pid, etf.Tuple{etf.Atom("migctl_stop"), tag}) }
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
		body, _ := m.(etf.Tuple)
		var res etf.Tuple
		if len(body) == 3 {
			res, _ = body[2].(etf.Tuple)
		}
		if len(res) == 2 && res[0] == etf.Atom("more") {
			// The first rows of a batch, sent apart (migctl_agent:pieces/1).
			bin := erl.Bytes(res[1])
			rows, err := ParseRows(bin, 0)
			if err != nil {
				stop()
				return fmt.Errorf("stream %s on %s: %w", s.spec, s.node, err)
			}
			pending = append(pending, rows...)
			pendingBytes += len(bin)
			continue
		}
		if len(res) == 2 && res[0] == etf.Atom("error") {
			return s.mapErr(&erl.Error{Op: "stream", Node: s.node, Err: &erl.RPCError{Class: "error", Reason: fmt.Sprint(res[1])}})
		}
		if len(res) != 4 {
			stop()
			return fmt.Errorf("stream %s on %s: unexpected message", s.spec, s.node)
		}
		var frames []byte
		var rows []Row
		var err error
		if rt, ok := res[1].(etf.Tuple); ok && len(rt) == 2 && rt[0] == etf.Atom("rows") {
			frames = erl.Bytes(rt[1])
			rows, err = ParseRows(frames, 0)
			if len(pending) > 0 {
				rows = append(pending, rows...)
				pending = nil
			}
			if err == nil && len(rows) != int(erl.Int64(res[3])) {
				err = fmt.Errorf("%d rows in a batch of %d", len(rows), erl.Int64(res[3]))
			}
		} else {
			frames = erl.Bytes(res[1])
			rows, err = ParseFrames(frames, int(erl.Int64(res[3])))
		}
		if err != nil {
			stop()
			return fmt.Errorf("stream %s on %s: %w", s.spec, s.node, err)
		}
		b := Batch{Rows: rows, WireBytes: len(frames) + pendingBytes}
		pendingBytes = 0
		if n, ok := res[2].([]byte); ok {
			b.Next = Cursor(n)
			// Take the batch: the node may read one more ahead.
			_ = s.c.Send(pid, etf.Tuple{etf.Atom("migctl_ack"), tag})
		} else {
			b.Done = true
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
