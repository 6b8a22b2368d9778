package agentapi

import (
	"errors"
	"testing"

	"github.com/erlmcp/migctl/erl"
)

// The recorder_info reply as ergo decodes it: true/false as Go bools (or
// atoms), integers as whichever Go type fits.
func TestDecodeRecorderInfo(t *testing.T) {
	reply := erl.Tuple{erl.Atom("ok"), true,
		erl.List{erl.Tuple{erl.Atom("erlmcp_session"), int64(1765000000123), 0}, erl.Tuple{erl.Atom("other"), -1, uint8(0)}},
		uint16(300), 123456, int64(60000), 7, uint8(2), 0}
	ri, err := DecodeRecorderInfo("n@h", reply)
	if err != nil {
		t.Fatal(err)
	}
	want := RecorderInfo{Running: true, Tables: []RecorderTable{{"erlmcp_session", 1765000000123, 0}, {"other", -1, 0}},
		Keys: 300, MemoryBytes: 123456, WindowMillis: 60000, Writes: 7, Deletes: 2, Pruned: 0}
	if len(ri.Tables) != 2 || ri.Tables[0] != want.Tables[0] || ri.Tables[1] != want.Tables[1] ||
		ri.Running != want.Running || ri.Keys != want.Keys || ri.MemoryBytes != want.MemoryBytes ||
		ri.WindowMillis != want.WindowMillis || ri.Writes != want.Writes || ri.Deletes != want.Deletes || ri.Pruned != want.Pruned {
		t.Fatalf("got %+v, want %+v", ri, want)
	}

	// Not running: the agent's reply when the library is not there.
	ri, err = DecodeRecorderInfo("n@h", erl.Tuple{erl.Atom("ok"), erl.Atom("false"), erl.List{}, 0, 0, 0, 0, 0, 0})
	if err != nil || ri.Running || len(ri.Tables) != 0 {
		t.Fatalf("not running: %+v %v", ri, err)
	}

	for name, bad := range map[string]erl.Term{
		"not a tuple":      erl.List{},
		"short":            erl.Tuple{erl.Atom("ok"), true, erl.List{}},
		"not ok":           erl.Tuple{erl.Atom("error"), true, erl.List{}, 0, 0, 0, 0, 0, 0},
		"running not bool": erl.Tuple{erl.Atom("ok"), 1, erl.List{}, 0, 0, 0, 0, 0, 0},
		"tables not list":  erl.Tuple{erl.Atom("ok"), true, 5, 0, 0, 0, 0, 0, 0},
		"table arity":      erl.Tuple{erl.Atom("ok"), true, erl.List{erl.Tuple{erl.Atom("t"), 1}}, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := DecodeRecorderInfo("n@h", bad); !errors.Is(err, ErrReplyShape) {
			t.Errorf("%s: %v, want ErrReplyShape", name, err)
		}
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
