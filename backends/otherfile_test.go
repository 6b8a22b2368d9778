package backends_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// Issue 11: DETS names tables, not files. With the application's table
// erlmcp_sessions_dets open, --dets-file naming another file used to be
// ignored silently (the check or export read the application's file). It
// is an error with a hint now; the open table's own file, or no file,
// still reads the open table.
func TestDETSFileOfAnotherTableIsRefused(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_dets"})
	seed(t, cl, 0, "dets", 300)
	c, node, ctx := cl.Client(), cl.Nodes[0].Name, tctx(t)
	open := string(erl.Bytes(cl.Call(0, "erlang", "list_to_binary", cl.Call(0, "dets", "info", erl.Atom(backends.DefaultDETSTable), erl.Atom("filename")))))
	require.NotEmpty(t, open)

	other := filepath.Join(cl.Nodes[0].Dir, "other.dets")
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"),
		erl.Map{erl.Atom("file_path"): other, erl.Atom("table_name"): erl.Atom("other_tab")}, 700, 3)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(700)}, r)

	s, err := backends.Open(c, node, backends.Spec{Kind: backends.KindDETS, Table: backends.DefaultDETSTable, File: other})
	require.NoError(t, err)
	_, err = s.Count(ctx)
	require.ErrorIs(t, err, backends.ErrOtherFile)
	var ee *erl.Error
	require.ErrorAs(t, err, &ee)
	require.Contains(t, ee.Hint, open)
	require.Contains(t, ee.Hint, "--dets-file")
	_, err = s.Describe(ctx)
	require.ErrorIs(t, err, backends.ErrOtherFile)

	for _, file := range []string{"", open} {
		s, err = backends.Open(c, node, backends.Spec{Kind: backends.KindDETS, Table: backends.DefaultDETSTable, File: file})
		require.NoError(t, err)
		n, err := s.Count(ctx)
		require.NoError(t, err, "file %q", file)
		require.EqualValues(t, 300, n)
	}
	// The other file, under its own table name, is read as asked.
	s, err = backends.Open(c, node, backends.Spec{Kind: backends.KindDETS, Table: "other_tab", File: other})
	require.NoError(t, err)
	n, err := s.Count(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 700, n)
	require.NoError(t, s.Release(ctx))
}
