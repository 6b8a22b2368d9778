package consistency_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/journal"
)

func TestRepairAndUndo(t *testing.T) {
	const n = 3000
	p := newPair(t, 2, n)
	ctx := tctx(t)
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)

	// Blobs of every session as it was after the damage, to compare with
	// after the undo.
	p.eval(t, p.ids[1], corruptTarget+", ok")
	p.eval(t, p.ids[2], deleteTarget+", ok")
	p.eval(t, p.ids[3], extraTarget+", ok")
	p.eval(t, p.ids[4], staleTarget+", ok")
	before := dump(t, p)

	// Dry run: a plan, no change.
	res, err := consistency.Repair(ctx, p.src, p.tgt, consistency.RepairOptions{Check: p.opts(), DryRun: true})
	require.NoError(t, err)
	require.Len(t, res.Actions, 4)
	ops := map[string]consistency.Op{}
	for _, a := range res.Actions {
		ops[a.ID] = a.Op
	}
	require.Equal(t, map[string]consistency.Op{
		p.ids[1]: consistency.CopyToTarget, p.ids[2]: consistency.CopyToTarget,
		p.ids[3] + "-extra": consistency.CopyToSource, p.ids[4]: consistency.CopyToTarget,
	}, ops)
	require.Zero(t, res.Run)
	sameDump(t, before, dump(t, p))

	// Execute with --delete-extra, then the stores agree.
	res, err = consistency.Repair(ctx, p.src, p.tgt, consistency.RepairOptions{Check: p.opts(), DeleteExtra: true, Journal: j, Reason: "test"})
	require.NoError(t, err)
	require.NotZero(t, res.Run)
	require.Equal(t, 3, res.Written)
	require.Equal(t, 1, res.Deleted)
	require.Equal(t, 4, res.Saved)
	rep, err := consistency.Check(ctx, p.src, p.tgt, p.opts())
	require.NoError(t, err)
	require.True(t, rep.Clean(), "%v", rep.Samples)

	// Undo: the stores are exactly as before the repair.
	u, err := consistency.UndoRepair(ctx, res.Run, p.src, p.tgt, consistency.UndoOptions{Options: p.opts(), Journal: j})
	require.NoError(t, err)
	require.Empty(t, u.Conflicts)
	sameDump(t, before, dump(t, p))
	_, err = consistency.UndoRepair(ctx, res.Run, p.src, p.tgt, consistency.UndoOptions{Options: p.opts(), Journal: j})
	require.ErrorIs(t, err, consistency.ErrAlreadyUndone)
	require.NoError(t, j.Check())
}

// dump is every session of both stores, by side and id, read on the
// nodes in one call each (not through backends.Stream).
func dump(t *testing.T, p *pair) map[string]string {
	t.Helper()
	out := map[string]string{}
	read := func(prefix string, node int, src string) {
		r := p.cl.Eval(node, src, nil)
		for _, x := range r.(erl.List) {
			tu := x.(erl.Tuple)
			out[prefix+string(tu[0].([]byte))] = string(tu[1].([]byte))
		}
	}
	read("s:", 0, `[{I, erlang:md5(term_to_binary(S))} || {I, S} <- dets:match_object(erlmcp_sessions_dets, '_')]`)
	read("t:", len(p.cl.Nodes)-1, `[{I, erlang:md5(term_to_binary(S))} || {_, I, S, _} <- ets:tab2list(erlmcp_session)]`)
	return out
}

func sameDump(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		require.True(t, ok, "%q lost (%d vs %d rows)", k, len(want), len(got))
		require.True(t, g == v, "%q changed", k)
	}
	for k := range got {
		_, ok := want[k]
		require.True(t, ok, "%q appeared", k)
	}
}
