package agentapi

import (
	"context"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/erl"
)

// StreamBatch is one reply of stream/3.
type StreamBatch struct {
	// Frames are the rows, <<IdLen:32, Id, BlobLen:32, Blob>>*.
	Frames []byte
	// Next is the opaque cursor to pass back; Done: the store has no more.
	Next []byte
	Done bool
	N    int // rows in Frames
}

// Stream is migctl_agent:stream/3: up to limit rows of st after cursor
// (empty: from the start). Reply {ok, Frames, NextCursor | done, N}.
func (s Agent) Stream(ctx context.Context, node string, st Store, cursor []byte, limit int) (StreamBatch, error) {
	const fun = "stream"
	if cursor == nil {
		cursor = []byte{}
	}
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), cursor, limit)
	if err != nil {
		return StreamBatch{}, err
	}
	return m.streamReply(node, t)
}

func (m module) streamReply(node string, t etf.Tuple) (StreamBatch, error) {
	const fun = "stream"
	if err := m.okN(node, fun, t, 3); err != nil {
		return StreamBatch{}, err
	}
	frames, ok := t[1].([]byte)
	if !ok || !isInt(t[3]) {
		return StreamBatch{}, m.shape(node, fun, t)
	}
	b := StreamBatch{Frames: frames, N: int(asInt(t[3]))}
	if b.Next, b.Done, ok = nextOrDone(t[2]); !ok {
		return StreamBatch{}, m.shape(node, fun, t)
	}
	return b, nil
}

// nextOrDone reads a stream's NextCursor | done.
func nextOrDone(t etf.Term) (next []byte, done, ok bool) {
	switch v := t.(type) {
	case []byte:
		return v, false, true
	case etf.Atom:
		return nil, true, v == "done"
	}
	return nil, false, false
}

// StreamPush is migctl_agent:stream_push/6: a process on node pushes st's
// batches from cursor (empty: the start) to this client, tagged tag
// (subscribe with erl.Client.SubscribeKey("migctl_stream", tag, ...)
// before calling), at most credit of them unacknowledged (Ack). Reply
// {ok, Pid}; the messages are ParseStreamMsg's.
func (s Agent) StreamPush(ctx context.Context, node string, st Store, cursor []byte, limit, credit int, tag []byte) (erl.Pid, error) {
	const fun = "stream_push"
	if cursor == nil {
		cursor = []byte{}
	}
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), cursor, limit, credit, s.C.Self(), tag)
	if err != nil {
		return erl.Pid{}, err
	}
	if err := m.okN(node, fun, t, 1); err != nil {
		return erl.Pid{}, err
	}
	pid, ok := t[1].(etf.Pid)
	if !ok {
		return erl.Pid{}, m.shape(node, fun, t)
	}
	return pid, nil
}

// StreamPushParts is migctl_agent:stream_push_parts/6: the whole of st as
// len(tags) streams at once, one per tag, each StreamPush's protocol (its
// Next is empty until done: a partitioned scan does not resume). Reply
// {ok, [Pid]}, one pid per tag, in order; {error, not_partitionable} when
// the node cannot cut st into parts.
func (s Agent) StreamPushParts(ctx context.Context, node string, st Store, limit, credit int, tags [][]byte) ([]erl.Pid, error) {
	const fun = "stream_push_parts"
	list := make(etf.List, len(tags))
	for i, tag := range tags {
		list[i] = tag
	}
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), len(tags), limit, credit, s.C.Self(), list)
	if err != nil {
		return nil, err
	}
	return m.pidsReply(node, fun, t, len(tags))
}

func (m module) pidsReply(node, fun string, t etf.Tuple, n int) ([]erl.Pid, error) {
	if err := m.okN(node, fun, t, 1); err != nil {
		return nil, err
	}
	l, ok := t[1].(etf.List)
	if !ok || len(l) != n {
		return nil, m.shape(node, fun, t)
	}
	pids := make([]erl.Pid, n)
	for i, x := range l {
		if pids[i], ok = x.(etf.Pid); !ok {
			return nil, m.shape(node, fun, t)
		}
	}
	return pids, nil
}

// Ack tells a pushing process the batch is taken: {migctl_ack, Tag}.
func (s Agent) Ack(pid erl.Pid, tag []byte) error {
	return s.C.Send(pid, etf.Tuple{etf.Atom("migctl_ack"), tag})
}

// Stop ends a pushing process: {migctl_stop, Tag}.
func (s Agent) Stop(pid erl.Pid, tag []byte) error {
	return s.C.Send(pid, etf.Tuple{etf.Atom("migctl_stop"), tag})
}

// StreamMsg is one message of a pushed stream.
type StreamMsg struct {
	// More: the first rows of a batch, sent ahead of it (Bin holds them,
	// as Rows); the batch's own message follows.
	More bool
	// Failed: {error, Reason}, the stream is over; Reason is its text
	// (nothing else is set).
	Failed bool
	Reason string
	// Rows: Bin is the term_to_binary of a list of rows as the table
	// holds them (backends.ParseRows); else Bin is frames
	// <<IdLen:32, Id, BlobLen:32, Blob>>*.
	Rows bool
	Bin  []byte
	// Next, Done and N as in StreamBatch; N counts the rows sent ahead.
	Next []byte
	Done bool
	N    int
}

// ParseStreamMsg reads a message of StreamPush's protocol:
// {migctl_stream, Tag, {more, Bin}} (first rows, ahead) |
// {migctl_stream, Tag, {ok, {rows, Bin} | Frames, Next | done, N}} |
// {migctl_stream, Tag, {error, Reason}}.
func ParseStreamMsg(msg erl.Term) (StreamMsg, error) {
	m := module{name: "migctl_agent"}
	const fun = "stream_push"
	body, _ := msg.(etf.Tuple)
	if len(body) != 3 || body[0] != etf.Atom("migctl_stream") {
		return StreamMsg{}, m.shape("", fun, msg)
	}
	res, _ := body[2].(etf.Tuple)
	switch {
	case len(res) == 2 && res[0] == etf.Atom("more"):
		bin, ok := res[1].([]byte)
		if !ok {
			return StreamMsg{}, m.shape("", fun, msg)
		}
		return StreamMsg{More: true, Rows: true, Bin: bin}, nil
	case len(res) == 2 && res[0] == etf.Atom("error"):
		return StreamMsg{Failed: true, Reason: erl.ReasonText(res[1])}, nil
	case len(res) == 4 && res[0] == etf.Atom("ok"):
		var out StreamMsg
		var ok bool
		if rt, isT := res[1].(etf.Tuple); isT {
			if len(rt) != 2 || rt[0] != etf.Atom("rows") {
				return StreamMsg{}, m.shape("", fun, msg)
			}
			out.Rows = true
			out.Bin, ok = rt[1].([]byte)
		} else {
			out.Bin, ok = res[1].([]byte)
		}
		if !ok || !isInt(res[3]) {
			return StreamMsg{}, m.shape("", fun, msg)
		}
		out.N = int(asInt(res[3]))
		if out.Next, out.Done, ok = nextOrDone(res[2]); !ok {
			return StreamMsg{}, m.shape("", fun, msg)
		}
		return out, nil
	}
	return StreamMsg{}, m.shape("", fun, msg)
}
