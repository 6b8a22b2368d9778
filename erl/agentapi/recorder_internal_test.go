package agentapi

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// The recorder_info reply as ergo decodes it: true/false as Go bools (or,
// from an older ergo, atoms), integers as whichever Go type fits. The same
// decode reads a view's recorder entry (see TestViewReply).
func TestRecorderReply(t *testing.T) {
	reply := erl.Tuple{erl.Atom("ok"), true,
		erl.List{erl.Tuple{erl.Atom("erlmcp_session"), int64(1765000000123), 0}, erl.Tuple{erl.Atom("other"), -1, uint8(0)}},
		uint16(300), 123456, int64(60000), 7, uint8(2), 0}
	r, err := cm.recorderReply("n@h", "recorder_info", reply)
	require.NoError(t, err)
	require.Equal(t, Recorder{Running: true,
		Since:   map[string]int64{"erlmcp_session": 1765000000123, "other": -1},
		Cleared: map[string]int64{"erlmcp_session": 0, "other": 0},
		Keys:    300, MemoryBytes: 123456, WindowMillis: 60000, Writes: 7, Deletes: 2, Pruned: 0}, r)

	// Not running: the agent's reply when the library is not there.
	for _, f := range []erl.Term{false, erl.Atom("false")} {
		r, err = cm.recorderReply("n@h", "recorder_info", erl.Tuple{erl.Atom("ok"), f, erl.List{}, 0, 0, 0, 0, 0, 0})
		require.NoError(t, err)
		require.False(t, r.Running)
		require.Empty(t, r.Since)
	}

	for name, bad := range map[string]erl.Tuple{
		"short":             {erl.Atom("ok"), true, erl.List{}},
		"long":              {erl.Atom("ok"), true, erl.List{}, 0, 0, 0, 0, 0, 0, 0},
		"not ok":            {erl.Atom("error"), true, erl.List{}, 0, 0, 0, 0, 0, 0},
		"running not bool":  {erl.Atom("ok"), 1, erl.List{}, 0, 0, 0, 0, 0, 0},
		"running atom":      {erl.Atom("ok"), erl.Atom("maybe"), erl.List{}, 0, 0, 0, 0, 0, 0},
		"tables not list":   {erl.Atom("ok"), true, 5, 0, 0, 0, 0, 0, 0},
		"table arity":       {erl.Atom("ok"), true, erl.List{erl.Tuple{erl.Atom("t"), 1}}, 0, 0, 0, 0, 0, 0},
		"table name":        {erl.Atom("ok"), true, erl.List{erl.Tuple{[]byte("t"), 1, 0}}, 0, 0, 0, 0, 0, 0},
		"table since":       {erl.Atom("ok"), true, erl.List{erl.Tuple{erl.Atom("t"), erl.Atom("x"), 0}}, 0, 0, 0, 0, 0, 0},
		"count not integer": {erl.Atom("ok"), true, erl.List{}, 0, 0, []byte("x"), 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cm.recorderReply("n@h", "recorder_info", bad)
			requireShape(t, err, "migctl_cluster:recorder_info")
		})
	}
}

func TestDecodeTicktime(t *testing.T) {
	for _, c := range []struct {
		in   erl.Term
		want int64
	}{
		{uint8(60), 60}, {int64(7), 7}, {erl.Tuple{erl.Atom("ongoing_change_to"), uint8(15)}, 15}, {erl.Atom("ignored"), 0},
	} {
		got, err := decodeTicktime("n@h", c.in)
		if err != nil || got != c.want {
			t.Errorf("%v: %d %v, want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []erl.Term{erl.Atom("what"), erl.Tuple{erl.Atom("x"), 1}, []byte("60")} {
		if _, err := decodeTicktime("n@h", bad); !errors.Is(err, ErrReplyShape) {
			t.Errorf("%v: %v, want ErrReplyShape", bad, err)
		}
	}
}
