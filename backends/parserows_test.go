package backends_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/term"
)

// ParseRows cuts a pushed batch (term_to_binary of the rows) into sessions
// whose blobs are exactly term_to_binary of each session, for both
// layouts; damaged input is an error, never a panic.
func TestParseRows(t *testing.T) {
	sess := func(id string, n int64) term.Term {
		return term.Map{{Key: term.Atom("id"), Value: term.Binary(id)}, {Key: term.Atom("last_accessed"), Value: n},
			{Key: term.Atom("metadata"), Value: term.Map{{Key: term.Binary("k"), Value: term.List{Elems: []term.Term{int64(1), term.Atom("x")}}}}}}
	}
	for _, layout := range []string{"dets", "mnesia"} {
		var rows []term.Term
		want := map[string][]byte{}
		for i, id := range []string{"a", "bb", "ccc"} {
			s := sess(id, int64(1000+i))
			blob, err := term.Encode(s)
			require.NoError(t, err)
			want[id] = blob
			if layout == "dets" {
				rows = append(rows, term.Tuple{term.Binary(id), s})
			} else {
				rows = append(rows, term.Tuple{term.Atom("erlmcp_session"), term.Binary(id), s, int64(7)})
			}
		}
		bin, err := term.Encode(term.List{Elems: rows})
		require.NoError(t, err)
		got, err := backends.ParseRows(append([]byte(nil), bin...), 0)
		require.NoError(t, err, layout)
		require.Len(t, got, 3)
		for _, r := range got {
			require.Equal(t, want[string(r.ID)], r.Blob, "%s %s", layout, r.ID)
		}
		for cut := 0; cut < len(bin); cut++ {
			_, err := backends.ParseRows(append([]byte(nil), bin[:cut]...), 3)
			require.Error(t, err, "%s cut at %d", layout, cut)
		}
	}
	empty, err := term.Encode(term.List{})
	require.NoError(t, err)
	got, err := backends.ParseRows(empty, 0)
	require.NoError(t, err)
	require.Empty(t, got)
	// A row whose id is not a binary is refused.
	bad, err := term.Encode(term.List{Elems: []term.Term{term.Tuple{int64(1), term.Map{}}}})
	require.NoError(t, err)
	_, err = backends.ParseRows(bad, 0)
	require.Error(t, err)
}
