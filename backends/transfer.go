package backends

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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

// push runs a scan with the agent's stream_push: the node reads ahead up
// to pushCredit batches.
func (s *agentStore) push(ctx context.Context, cursor Cursor, batch int, fn func(Batch) error) error {
	if batch <= 0 {
		batch = 1000
	}
	if cursor == nil {
		cursor = Cursor{}
	}
	var tag [16]byte
	_, _ = rand.Read(tag[:])
	msgs, unsub := s.c.SubscribeKey("migctl_stream", tag[:], pushCredit+1)
	defer unsub()
	if err := s.c.Connect(ctx, s.node); err != nil {
		return err
	}
	down, unwatch := s.c.WatchNode(s.node)
	defer unwatch()
	t, err := s.call(ctx, "stream_push", s.term, []byte(cursor), batch, pushCredit, s.c.Self(), tag[:])
	if err != nil {
		return err
	}
	pid, ok := t[1].(etf.Pid)
	if !ok {
		return fmt.Errorf("stream %s on %s: unexpected reply %v", s.spec, s.node, t)
	}
	stop := func() { _ = s.c.Send(pid, etf.Tuple{etf.Atom("migctl_stop"), tag[:]}) }
	idle := time.NewTimer(time.Minute)
	defer idle.Stop()
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
		if len(res) == 2 && res[0] == etf.Atom("error") {
			return s.mapErr(&erl.Error{Op: "stream", Node: s.node, Err: &erl.RPCError{Class: "error", Reason: fmt.Sprint(res[1])}})
		}
		if len(res) != 4 {
			stop()
			return fmt.Errorf("stream %s on %s: unexpected message", s.spec, s.node)
		}
		frames := erl.Bytes(res[1])
		rows, err := ParseFrames(frames, int(erl.Int64(res[3])))
		if err != nil {
			stop()
			return err
		}
		b := Batch{Rows: rows, WireBytes: len(frames)}
		if n, ok := res[2].([]byte); ok {
			b.Next = Cursor(n)
			// Take the batch: the node may read one more ahead.
			_ = s.c.Send(pid, etf.Tuple{etf.Atom("migctl_ack"), tag[:]})
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

var _ = errors.New
