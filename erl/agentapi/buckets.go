package agentapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/ergo-services/ergo/etf"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
)

// Buckets is the stub of migctl_buckets (erlang/agent/migctl_buckets.erl),
// migctl's one bucket-checksum protocol: the sums of many hash ranges in
// one pass over a store, the keys of chosen ranges, the same frames for
// given ids. backends (a Store's checksums), consistency (Check) and
// cluster (VerifyReplication, the heal plan) all call it; the bucket
// arithmetic is package bucketdiff's.
type Buckets struct{ C *erl.Client }

func (s Buckets) mod() module { return module{c: s.C, name: "migctl_buckets"} }

// DigestKind chooses what a row's digest covers.
type DigestKind int

const (
	// DigestContent: the id and the session without last_accessed (which
	// every fetch rewrites); what two stores must agree on.
	DigestContent DigestKind = iota
	// DigestRecord: the whole record, last_accessed included, and for a
	// Mnesia row its write time; what replicas of one table must agree
	// on, and the digest migctl_cluster's merge compares.
	DigestRecord
)

func (d DigestKind) opts() etf.List {
	if d == DigestRecord {
		return etf.List{etf.Tuple{etf.Atom("digest"), etf.Atom("record")}}
	}
	return etf.List{}
}

// ExcludeChanged leaves out of a pass (Sums, Keys) the rows whose key the
// node's own change recorder (migctl_recorder) has as changed in the
// Mnesia table Table at or after SinceMs (the node's clock): the keys
// written while a check runs, which the caller verifies by key instead.
// The set is the recorder's at the start of the pass. A node whose
// recorder is not running, or does not cover Table back to SinceMs,
// answers with an error wrapping ErrNoRecorderCoverage: it never leaves
// out nothing (or something else) silently.
//
//	Opts {exclude_changed, Table, SinceMs}
//
// Pass > 0 (a check's random token) lets a store's node keep the rows of
// the check's first Sums pass and answer its later Sums and Keys with the
// same token, Table and SinceMs from them instead of reading the store
// (above all a DETS file) again (erlang/agent/migctl_pass.erl says why
// that is sound: every key changed since SinceMs is left out of those
// passes). Such an answer's Method is "kept". DropPass releases them at
// the end of the check.
//
//	Opts {pass, Token}
type ExcludeChanged struct {
	Table   string
	SinceMs int64
	Pass    int64
}

func (x *ExcludeChanged) opts() []etf.Term {
	o := []etf.Term{etf.Tuple{etf.Atom("exclude_changed"), etf.Atom(x.Table), x.SinceMs}}
	if x.Pass > 0 {
		o = append(o, etf.Tuple{etf.Atom("pass"), x.Pass})
	}
	return o
}

// DropPass is migctl_buckets:drop_pass/1: node forgets the passes it kept
// for the check token (ExcludeChanged.Pass).
func (s Buckets) DropPass(ctx context.Context, node string, token int64) error {
	const fun = "drop_pass"
	m := s.mod()
	t, err := m.call(ctx, node, fun, token)
	if err != nil {
		return err
	}
	return m.okN(node, fun, t, 1)
}

// ErrNoRecorderCoverage: a pass asked to leave out the keys changed since
// a time (ExcludeChanged) on a node whose change recorder is not running
// (agent reason no_recorder) or does not cover the table back to that time
// (recorder_gap: restarted, resubscribed, pruned, not subscribed).
var ErrNoRecorderCoverage = errors.New("the change recorder does not cover the table since the time asked for")

// recorderErr turns the agent's no_recorder / recorder_gap refusal into an
// error wrapping ErrNoRecorderCoverage (keeping the node and the reason);
// other errors pass unchanged.
func recorderErr(node, op string, err error) error {
	var re *erl.RPCError
	if errors.As(err, &re) && (re.Reason == "no_recorder" || re.Reason == "recorder_gap") {
		why := "no change recorder runs"
		if re.Reason == "recorder_gap" {
			why = "the change recorder does not cover the table back to the time asked for"
		}
		return &erl.Error{Op: op, Node: node, Err: fmt.Errorf("%w: %s (%s)", ErrNoRecorderCoverage, re.Reason, why)}
	}
	return err
}

// DETSRead chooses how a pass reads a DETS file (Sums, Keys): the node
// reads the file directly beside its server by default
// (erlang/agent/migctl_dets.erl), so that the application's requests do
// not queue behind the pass's.
//
//	Opts {dets_read, auto | server | raw_unfixed}
type DETSRead string

const (
	// DETSReadAuto: directly when the file's layout checks out, else
	// through the server.
	DETSReadAuto DETSRead = ""
	// DETSReadServer: through the DETS server (dets:foldl/3), the
	// reference the direct pass is compared with.
	DETSReadServer DETSRead = "server"
	// DETSReadRawUnfixed: directly without fixing the table, so that a
	// file that grows during the pass makes it redo through the server;
	// for the tests of that fallback only.
	DETSReadRawUnfixed DETSRead = "raw_unfixed"
)

// readOpts are the options DETSRead and ReportMethod add.
func readOpts(l etf.List, r DETSRead, report bool) etf.List {
	if r != DETSReadAuto {
		l = append(l, etf.Tuple{etf.Atom("dets_read"), etf.Atom(string(r))})
	}
	if report {
		l = append(l, etf.Atom("method"))
	}
	return l
}

// SumOptions tune Sums.
type SumOptions struct {
	Digest DigestKind
	// LAQuantum > 0 (ms; content digest only) puts last_accessed div
	// LAQuantum in the digest: copies whose last_accessed differ by that
	// much or more always land in different sums.
	LAQuantum int64
	// MaxWritten asks for each bucket's latest Mnesia write time.
	MaxWritten bool
	// Exclude, when set, leaves the keys changed since a time out of the
	// sums (see ExcludeChanged).
	Exclude *ExcludeChanged
	// DETSRead: how a DETS file is read (default directly).
	DETSRead DETSRead
	// ReportMethod asks how the store was read (SumsReply.Method).
	ReportMethod bool
}

// Odd are the rows of a store that are not erlmcp sessions: their number
// and the first keys, as Erlang prints them.
type Odd struct {
	N    int64
	Keys []string
}

// SumsReply is a store's answer to Sums.
type SumsReply struct {
	Sums []bucketdiff.Sum // one per bucket of every range, in order
	Size int64            // the store's size before the pass
	Odd  Odd              // rows the pass met that are not sessions
	// Bytes is the payload that crossed the wire (request and reply
	// binaries), since a check reports what it moved.
	Bytes int64
	// Excluded is the number of rows the pass left out (with Exclude).
	Excluded int64
	// Method (with ReportMethod): "ets" (ETS, Mnesia), "raw" (a DETS
	// file read directly), "server" (through the DETS server) or
	// "redone" (directly, then again through the server because the file
	// grew meanwhile).
	Method string
}

// Sums is migctl_buckets:sums/3: one pass over st, every bucket of rs.
// Reply {ok, <<Count:32, Sum:64[, MaxWritten:64/signed]>>*, Size, Odd}, and
// with Exclude {ok, Sums, Size, Odd, Excluded}.
func (s Buckets) Sums(ctx context.Context, node string, st Store, rs []bucketdiff.Range, o SumOptions) (SumsReply, error) {
	const fun = "sums"
	req := EncodeRanges(rs)
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), req, o.terms())
	if err != nil {
		return SumsReply{}, recorderErr(node, "migctl_buckets:"+fun, err)
	}
	out, err := m.sumsReply(node, t, bucketdiff.Total(rs), o)
	out.Bytes += int64(len(req))
	return out, err
}

func (o SumOptions) terms() etf.List {
	opts := o.Digest.opts()
	if o.LAQuantum > 0 {
		opts = append(opts, etf.Tuple{etf.Atom("la_quantum"), o.LAQuantum})
	}
	if o.MaxWritten {
		opts = append(opts, etf.Atom("max_written"))
	}
	if o.Exclude != nil {
		opts = append(opts, o.Exclude.opts()...)
	}
	return readOpts(opts, o.DETSRead, o.ReportMethod)
}

// sumsReply reads sums/3's reply for n buckets (Bytes: the reply's
// binaries only).
func (m module) sumsReply(node string, t etf.Tuple, n int, o SumOptions) (SumsReply, error) {
	const fun = "sums"
	stride, arity := 12, 3
	if o.MaxWritten {
		stride = 20
	}
	if o.Exclude != nil {
		arity = 4
	}
	if o.ReportMethod {
		arity++
	}
	if err := m.okN(node, fun, t, arity); err != nil {
		return SumsReply{}, err
	}
	b, oddB := asBytes(t[1]), asBytes(t[3])
	if len(b) != stride*n {
		return SumsReply{}, m.shape(node, fun, fmt.Sprintf("%d bytes for %d buckets", len(b), n))
	}
	out := SumsReply{Sums: make([]bucketdiff.Sum, n), Size: asInt(t[2]), Bytes: int64(len(b) + len(oddB))}
	for i := range out.Sums {
		r := b[stride*i:]
		out.Sums[i].Count = uint64(binary.BigEndian.Uint32(r))
		out.Sums[i].Sum = binary.BigEndian.Uint64(r[4:])
		if o.MaxWritten {
			out.Sums[i].MaxWritten = int64(binary.BigEndian.Uint64(r[12:]))
		}
	}
	var err error
	if out.Odd, err = ParseOdd(oddB); err != nil {
		return SumsReply{}, m.shape(node, fun, err.Error())
	}
	if o.Exclude != nil {
		if !isInt(t[4]) {
			return SumsReply{}, m.shape(node, fun, t)
		}
		out.Excluded = asInt(t[4])
	}
	if o.ReportMethod {
		out.Method = asAtom(t[len(t)-1])
	}
	return out, nil
}

// KeyOptions tune Keys and OfIDs.
type KeyOptions struct {
	Digest DigestKind // content: without last_accessed and without a quantum
	// Times adds each row's write time (Mnesia; 0 for ETS/DETS) and
	// created_at (-1 when absent); LastAccessed is then -1 when absent
	// (else 0).
	Times bool
	// Limit > 0 makes Keys fail (too_many_rows) past that many rows.
	Limit int
	// Exclude, when set, leaves the keys changed since a time out of Keys'
	// listing (see ExcludeChanged); OfIDs ignores it.
	Exclude *ExcludeChanged
	// DETSRead and ReportMethod as SumOptions's (Keys only).
	DETSRead     DETSRead
	ReportMethod bool
}

func (o KeyOptions) terms() etf.List {
	l := o.Digest.opts()
	if o.Times {
		l = append(l, etf.Atom("times"))
	}
	if o.Limit > 0 {
		l = append(l, etf.Tuple{etf.Atom("limit"), o.Limit})
	}
	if o.Exclude != nil {
		l = append(l, o.Exclude.opts()...)
	}
	return readOpts(l, o.DETSRead, o.ReportMethod)
}

// Key is what a store holds for one key.
type Key struct {
	Digest       uint32
	LastAccessed int64
	Written      int64 // with Times
	Created      int64 // with Times
}

// KeysReply is a store's answer to Keys or OfIDs.
type KeysReply struct {
	Keys  map[string]Key
	Odd   Odd   // Keys only: rows in the ranges' pass that are not sessions
	Bytes int64 // payload both ways
	// Excluded (Keys with Exclude) is the number of rows the pass left out.
	Excluded int64
	// Method (Keys with ReportMethod): as SumsReply's.
	Method string
}

// Keys is migctl_buckets:keys/3: one pass over st, every row whose hash
// is in rs. Reply {ok, Frames, N, Odd}, with Exclude {ok, Frames, N, Odd,
// Excluded}, frames
// <<IdLen:32, Id, Digest:32, LastAccessed:64/signed[, Written:64/signed, Created:64/signed]>>.
func (s Buckets) Keys(ctx context.Context, node string, st Store, rs []bucketdiff.Range, o KeyOptions) (KeysReply, error) {
	const fun = "keys"
	req := EncodeRanges(rs)
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), req, o.terms())
	if err != nil {
		return KeysReply{}, recorderErr(node, "migctl_buckets:"+fun, err)
	}
	out, err := m.keysReply(node, t, o)
	out.Bytes += int64(len(req))
	return out, err
}

// keysReply reads keys/3's reply (Bytes: the reply's binaries only).
func (m module) keysReply(node string, t etf.Tuple, o KeyOptions) (KeysReply, error) {
	const fun = "keys"
	arity := 3
	if o.Exclude != nil {
		arity = 4
	}
	if o.ReportMethod {
		arity++
	}
	if err := m.okN(node, fun, t, arity); err != nil {
		return KeysReply{}, err
	}
	b, oddB := asBytes(t[1]), asBytes(t[3])
	out := KeysReply{Keys: make(map[string]Key, asInt(t[2])), Bytes: int64(len(b) + len(oddB))}
	if err := parseKeys(b, o.Times, out.Keys); err != nil {
		return KeysReply{}, m.shape(node, fun, err.Error())
	}
	var err error
	if out.Odd, err = ParseOdd(oddB); err != nil {
		return KeysReply{}, m.shape(node, fun, err.Error())
	}
	if o.Exclude != nil {
		if !isInt(t[4]) {
			return KeysReply{}, m.shape(node, fun, t)
		}
		out.Excluded = asInt(t[4])
	}
	if o.ReportMethod {
		out.Method = asAtom(t[len(t)-1])
	}
	return out, nil
}

// OfIDs is migctl_buckets:of_ids/3: the frames of Keys for the given ids
// that st holds (absent ones are left out), by lookup, in calls of at
// most batch ids (default 5,000). Reply {ok, Frames, N}.
func (s Buckets) OfIDs(ctx context.Context, node string, st Store, ids []string, batch int, o KeyOptions) (KeysReply, error) {
	const fun = "of_ids"
	if batch <= 0 {
		batch = 5000
	}
	o.Limit, o.Exclude, o.DETSRead, o.ReportMethod = 0, nil, DETSReadAuto, false
	m := s.mod()
	out := KeysReply{Keys: make(map[string]Key, len(ids))}
	for i := 0; i < len(ids); i += batch {
		req := EncodeIDs(ids[i:min(i+batch, len(ids))])
		t, err := m.call(ctx, node, fun, st.term(s.C), req, o.terms())
		if err != nil {
			return KeysReply{}, err
		}
		if err := m.okN(node, fun, t, 2); err != nil {
			return KeysReply{}, err
		}
		b := asBytes(t[1])
		out.Bytes += int64(len(req) + len(b))
		if err := parseKeys(b, o.Times, out.Keys); err != nil {
			return KeysReply{}, m.shape(node, fun, err.Error())
		}
	}
	return out, nil
}

// EncodeRanges is the ranges argument: <<Lo:64, Hi:64, Buckets:32>>*.
func EncodeRanges(rs []bucketdiff.Range) []byte {
	buf := make([]byte, 0, 20*len(rs))
	for _, r := range rs {
		buf = binary.BigEndian.AppendUint64(buf, r.Lo)
		buf = binary.BigEndian.AppendUint64(buf, r.Hi)
		buf = binary.BigEndian.AppendUint32(buf, uint32(r.Buckets))
	}
	return buf
}

// EncodeIDs frames ids as <<IdLen:32, Id>>* (never nil: an empty binary).
func EncodeIDs(ids []string) []byte {
	buf := []byte{}
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(id)))
		buf = append(buf, id...)
	}
	return buf
}

// parseKeys reads key frames (see Keys) into out.
func parseKeys(b []byte, times bool, out map[string]Key) error {
	tail := 12
	if times {
		tail = 28
	}
	for len(b) > 0 {
		if len(b) < 4 || len(b) < 4+int(binary.BigEndian.Uint32(b))+tail {
			return fmt.Errorf("key frames truncated")
		}
		n := int(binary.BigEndian.Uint32(b))
		r := b[4+n:]
		k := Key{Digest: binary.BigEndian.Uint32(r), LastAccessed: int64(binary.BigEndian.Uint64(r[4:]))}
		if times {
			k.Written = int64(binary.BigEndian.Uint64(r[12:]))
			k.Created = int64(binary.BigEndian.Uint64(r[20:]))
		}
		out[string(b[4:4+n])] = k
		b = r[tail:]
	}
	return nil
}

// ParseKeyFrames reads the key frames without times that migctl_check's
// listings share with Keys (<<IdLen:32, Id, Digest:32, LastAccessed:64/signed>>*).
func ParseKeyFrames(b []byte, out map[string]Key) error { return parseKeys(b, false, out) }

// ParseOdd reads <<Count:32, (KeyLen:32, Key/binary)*>>, the rows that are
// not sessions (migctl_lib:odd/0).
func ParseOdd(b []byte) (Odd, error) {
	if len(b) < 4 {
		return Odd{}, fmt.Errorf("odd rows: truncated")
	}
	o := Odd{N: int64(binary.BigEndian.Uint32(b))}
	for b = b[4:]; len(b) > 0; {
		if len(b) < 4 || len(b) < 4+int(binary.BigEndian.Uint32(b)) {
			return Odd{}, fmt.Errorf("odd rows: bad frame")
		}
		n := int(binary.BigEndian.Uint32(b))
		o.Keys = append(o.Keys, string(b[4:4+n]))
		b = b[4+n:]
	}
	return o, nil
}

// ChangedRows is the reply of ChangedRows: the keys a node's recorder
// lists, each with the store's row.
type ChangedRows struct {
	// Listed is every key the recorder listed; Present those the store
	// holds, with their digests (as Keys lists them, content digest).
	Listed  []string
	Present map[string]Key
	Bytes   int64 // payload both ways
}

// ChangedRows is migctl_buckets:changed_rows/3: the keys node's change
// recorder has as changed in the Mnesia table tab at or after sinceMs,
// each with st's digest and last_accessed, or absent: what a full check
// left out of its buckets as in flight, read back by key in one call.
// A recorder that cannot say is an error wrapping ErrNoRecorderCoverage.
//
//	migctl_buckets:changed_rows(Spec, Tab, SinceMs) ->
//	    {ok, Z(<<Len:16, Id, 0>> | <<Len:16, Id, 1, Digest:32, LA:64/signed>>)*, N}
func (s Buckets) ChangedRows(ctx context.Context, node string, st Store, tab string, sinceMs int64) (ChangedRows, error) {
	const fun = "changed_rows"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), etf.Atom(tab), sinceMs)
	if err != nil {
		return ChangedRows{}, recorderErr(node, "migctl_buckets:"+fun, err)
	}
	return m.changedRowsReply(node, t)
}

// ChangedRowsPaired is migctl_buckets:changed_rows/4: as ChangedRows, and
// for each key the row of the Mnesia table pair too, read on node (which
// must hold a local copy of it) right after st's row of the same key, so
// that a key written all the time has its two copies read at nearly the
// same moment. Both replies list the same keys.
//
//	migctl_buckets:changed_rows(Spec, Tab, SinceMs, {mnesia, Pair}) -> {ok, Z, N, PairZ}
func (s Buckets) ChangedRowsPaired(ctx context.Context, node string, st Store, pair, tab string, sinceMs int64) (ChangedRows, ChangedRows, error) {
	const fun = "changed_rows"
	m := s.mod()
	t, err := m.call(ctx, node, fun, st.term(s.C), etf.Atom(tab), sinceMs, etf.Tuple{etf.Atom("mnesia"), etf.Atom(pair)})
	if err != nil {
		return ChangedRows{}, ChangedRows{}, recorderErr(node, "migctl_buckets:"+fun, err)
	}
	return m.changedRowsPairedReply(node, t)
}

func (m module) changedRowsPairedReply(node string, t etf.Tuple) (ChangedRows, ChangedRows, error) {
	const fun = "changed_rows"
	if err := m.okN(node, fun, t, 3); err != nil {
		return ChangedRows{}, ChangedRows{}, err
	}
	a, err := m.changedRowsReply(node, t[:3])
	if err != nil {
		return ChangedRows{}, ChangedRows{}, err
	}
	b, err := m.changedRowsReply(node, etf.Tuple{t[0], t[3], t[2]})
	if err != nil {
		return ChangedRows{}, ChangedRows{}, err
	}
	if !slices.Equal(a.Listed, b.Listed) {
		return ChangedRows{}, ChangedRows{}, m.shape(node, fun, "the paired rows list other keys")
	}
	return a, b, nil
}

func (m module) changedRowsReply(node string, t etf.Tuple) (ChangedRows, error) {
	const fun = "changed_rows"
	if err := m.okN(node, fun, t, 2); err != nil {
		return ChangedRows{}, err
	}
	z, ok := t[1].([]byte)
	if !ok || !isInt(t[2]) {
		return ChangedRows{}, m.shape(node, fun, t)
	}
	b, err := unzip(z)
	if err != nil {
		return ChangedRows{}, m.shape(node, fun, err.Error())
	}
	out := ChangedRows{Present: map[string]Key{}, Bytes: int64(len(z))}
	for len(b) > 0 {
		if len(b) < 3 || len(b) < 3+int(binary.BigEndian.Uint16(b)) {
			return ChangedRows{}, m.shape(node, fun, "truncated frame")
		}
		n := int(binary.BigEndian.Uint16(b))
		id, r := string(b[2:2+n]), b[2+n:]
		out.Listed = append(out.Listed, id)
		switch r[0] {
		case 0:
			b = r[1:]
		case 1:
			if len(r) < 13 {
				return ChangedRows{}, m.shape(node, fun, "truncated frame")
			}
			out.Present[id] = Key{Digest: binary.BigEndian.Uint32(r[1:]), LastAccessed: int64(binary.BigEndian.Uint64(r[5:]))}
			b = r[13:]
		default:
			return ChangedRows{}, m.shape(node, fun, fmt.Sprintf("presence byte %d", r[0]))
		}
	}
	if int64(len(out.Listed)) != asInt(t[2]) {
		return ChangedRows{}, m.shape(node, fun, fmt.Sprintf("%d frames, count %d", len(out.Listed), asInt(t[2])))
	}
	return out, nil
}
