package exportfile

import (
	"context"
	"errors"
	"io"

	"github.com/erlmcp/migctl/backends"
)

// ExportParts is how many streams an export reads at once from a table the
// node can cut into parts (Mnesia; see backends.ScanParallel): two schedulers of the node
// encode, the rest stay with the application. Rows are written in
// arrival order; the file's order never mattered to Import.
const ExportParts = 2

// Export streams every row of s into w in the exportfile format. progress,
// if not nil, is called with the number of rows of each batch.
func Export(ctx context.Context, s backends.Store, w io.Writer, batch int, progress func(int)) (Trailer, error) {
	xw, err := NewWriter(w, Header{Tool: "migctl", Node: s.Node(), Store: s.Spec()})
	if err != nil {
		return Trailer{}, err
	}
	var werr error
	err = backends.ScanParallel(ctx, s, batch, ExportParts, func(b backends.Batch) error {
		if werr = xw.Write(b.Rows); werr != nil {
			return werr
		}
		if progress != nil {
			progress(len(b.Rows))
		}
		return nil
	})
	if err != nil {
		return Trailer{}, err
	}
	return xw.Close()
}

// Import writes the rows of an export file into s. The caller should have
// verified the file first (Verify): a damaged file is detected
// here too, but only when the reader reaches the damage.
func Import(ctx context.Context, s backends.Store, r io.Reader, batch int, mode backends.PutMode, progress func(int)) (backends.PutResult, error) {
	xr, err := NewReader(r)
	if err != nil {
		return backends.PutResult{}, err
	}
	var total backends.PutResult
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		rows, err := xr.Next(batch)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		res, err := s.Put(ctx, rows, mode)
		total.Written += res.Written
		total.Skipped += res.Skipped
		if err != nil {
			return total, err
		}
		if progress != nil {
			progress(len(rows))
		}
	}
}
