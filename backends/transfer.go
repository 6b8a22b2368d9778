package backends

import (
	"context"
)

// Scan streams the whole store, calling fn for each batch. The next batch
// is requested while fn works on the current one, so the node's work and
// ours overlap.
func Scan(ctx context.Context, s Store, batch int, fn func(Batch) error) error {
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
	pending := next(nil)
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
