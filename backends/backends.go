package backends

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/erlmcp/migctl/backends/bucketdiff"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/term"
)

// Kind names a storage layout.
type Kind string

// The three layouts of erlmcp.
const (
	KindETS    Kind = "ets"
	KindDETS   Kind = "dets"
	KindMnesia Kind = "mnesia"
)

// ParseKind validates a --store value.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(s)); k {
	case KindETS, KindDETS, KindMnesia:
		return k, nil
	}
	return "", fmt.Errorf("%w: %q (want ets, dets or mnesia)", ErrUnknownStore, s)
}

// Spec names a store on a node.
type Spec struct {
	Kind  Kind   `json:"kind"`
	Table string `json:"table"`
	// File is the DETS file. Empty means: use the table the application
	// has open (migctl asks the node for its file name).
	File string `json:"file,omitempty"`
	// Create allows a missing DETS file to be created (a migration target).
	Create bool `json:"-"`
}

// Default table names, as in erlmcp's modules.
const (
	DefaultETSTable    = "erlmcp_sessions_ets"
	DefaultDETSTable   = "erlmcp_sessions_dets"
	DefaultDETSFile    = "erlmcp_sessions.dets"
	DefaultMnesiaTable = "erlmcp_session"
)

// DefaultSpec is erlmcp's default store of a kind.
func DefaultSpec(k Kind) Spec {
	switch k {
	case KindETS:
		return Spec{Kind: k, Table: DefaultETSTable}
	case KindDETS:
		return Spec{Kind: k, Table: DefaultDETSTable}
	default:
		return Spec{Kind: KindMnesia, Table: DefaultMnesiaTable}
	}
}

func (s Spec) String() string {
	if s.File != "" {
		return fmt.Sprintf("%s:%s(%s)", s.Kind, s.Table, s.File)
	}
	return fmt.Sprintf("%s:%s", s.Kind, s.Table)
}

// Row is one session: its id and its term_to_binary blob.
type Row struct {
	ID   []byte
	Blob []byte
}

// Cursor is an opaque position in a stream; nil starts at the beginning.
type Cursor []byte

// Batch is one step of a stream.
type Batch struct {
	Rows []Row
	// Next continues the stream; nil when Done.
	Next Cursor
	Done bool
	// WireBytes is the size of the payload that crossed the network.
	WireBytes int
}

// PutMode says what a Put does when the key exists.
type PutMode string

// Put modes.
const (
	// Overwrite writes every row.
	Overwrite PutMode = "overwrite"
	// IfAbsent writes only rows whose key is missing.
	IfAbsent PutMode = "if_absent"
	// IfNewer writes rows that are missing or whose last_accessed is later
	// than the stored one; decided on the node, per row, inside one
	// transaction for Mnesia.
	IfNewer PutMode = "if_newer"
)

// PutResult counts what a Put did.
type PutResult struct {
	Written int `json:"written"`
	Skipped int `json:"skipped"`
}

// HashRange is a half-open range [Lo, Hi) of erlang:phash2(Id, 2^32)
// (bucketdiff's Span: the bucket arithmetic is that package's).
type HashRange = bucketdiff.Span

// FullRange covers every key.
var FullRange = bucketdiff.Full

// BucketSum is the checksum of one bucket of a HashRange.
type BucketSum struct {
	Count uint64
	Sum   uint64
}

// ChecksumOptions tune Checksum.
type ChecksumOptions struct {
	// WithLastAccessed digests the whole record: last_accessed included,
	// and for Mnesia the record's write time.
	WithLastAccessed bool
}

// Info describes a store on a node.
type Info struct {
	Spec   Spec   `json:"spec"`
	Node   string `json:"node"`
	Exists bool   `json:"exists"`
	Size   int64  `json:"size"`
	// Layout is "ok" when the table holds erlmcp sessions (or is empty),
	// else the reason it does not.
	Layout  string   `json:"layout,omitempty"`
	Storage string   `json:"storage,omitempty"` // Mnesia storage type here
	Copies  []string `json:"copies,omitempty"`  // Mnesia replicas
	File    string   `json:"file,omitempty"`    // DETS file
	// Opening: DETS is still opening the table here (repairing its file
	// after a crash): it exists but answers nothing yet (ping only).
	Opening bool `json:"opening,omitempty"`
}

// Store is one session store on one node. Implementations: *ETS, *DETS,
// *Mnesia. Every method is one round trip to the node (plus, the first
// time, loading the agent).
type Store interface {
	// Spec and Node identify the store.
	Spec() Spec
	Node() string
	// Describe says whether the store exists there, its size and whether it
	// holds erlmcp sessions.
	Describe(ctx context.Context) (Info, error)
	// Count is the number of rows.
	Count(ctx context.Context) (int64, error)
	// Stream returns up to limit rows after cursor.
	Stream(ctx context.Context, cursor Cursor, limit int) (Batch, error)
	// Get reads one session without touching it (unlike erlmcp's fetch,
	// it does not rewrite last_accessed). ok is false when absent.
	Get(ctx context.Context, id []byte) (blob []byte, ok bool, err error)
	// Put writes a batch of rows.
	Put(ctx context.Context, rows []Row, mode PutMode) (PutResult, error)
	// Delete removes ids; missing ids are not an error.
	Delete(ctx context.Context, ids [][]byte) (int, error)
	// Checksum sums the rows in r, in buckets equal parts of r.
	Checksum(ctx context.Context, r HashRange, buckets int, opts ChecksumOptions) ([]BucketSum, error)
	// Release lets go of anything held on the node for this store (a DETS
	// table opened by migctl).
	Release(ctx context.Context) error
}

// Sentinel errors, mapped from the agent's reasons.
var (
	ErrUnknownStore  = errors.New("unknown store kind")
	ErrNoSuchTable   = errors.New("no such table")
	ErrNoSuchFile    = errors.New("no such DETS file")
	ErrNotSessions   = errors.New("not a session table")
	ErrNeedsRepair   = errors.New("DETS file needs repair")
	ErrNotDETS       = errors.New("not a DETS file")
	ErrMnesiaDown    = errors.New("mnesia is not running")
	ErrNoLocalCopy   = errors.New("no local copy of the table on this node")
	ErrCursorExpired = errors.New("stream cursor no longer valid")
	// ErrDETSOpening: DETS is still opening the table on the node (after
	// a crash it repairs the file first); every call to it would wait.
	ErrDETSOpening = errors.New("DETS is still opening the table (repairing the file?)")
	// ErrOtherFile: a DETS table of the name asked for is open on the
	// node from another file than --dets-file. DETS names tables, not
	// files, so using it would read the wrong file.
	ErrOtherFile = errors.New("a DETS table of that name is open from another file")
)

// Open returns the Store for spec on node.
func Open(c *erl.Client, node string, spec Spec) (Store, error) {
	if spec.Table == "" {
		spec.Table = DefaultSpec(spec.Kind).Table
	}
	base := agentStore{c: c, node: node, spec: spec, st: agentSpec(spec)}
	switch spec.Kind {
	case KindETS:
		return &ETS{base}, nil
	case KindDETS:
		return &DETS{base}, nil
	case KindMnesia:
		return &Mnesia{base}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownStore, spec.Kind)
}

// ETS is erlmcp_session_ets's layout: an ordered_set of {Id, Session}.
type ETS struct{ agentStore }

// DETS is erlmcp_session_dets's layout: a set file of {Id, Session}.
type DETS struct{ agentStore }

// Mnesia is erlmcp_session_mnesia's layout: {Tab, Id, Session, WriteTime}.
// The last attribute is named last_accessed, but erlmcp's store/3 and
// fetch/2 put the write time there (erlang:system_time(millisecond)), and
// so does every row migctl writes (Put), whatever the session's own
// last_accessed says.
type Mnesia struct{ agentStore }

var (
	_ Store = (*ETS)(nil)
	_ Store = (*DETS)(nil)
	_ Store = (*Mnesia)(nil)
)

// agentSpec names spec the way the agent stubs do (the spec term the
// agent modules dispatch on is built there, from this).
func agentSpec(spec Spec) agentapi.Store {
	return agentapi.Store{Kind: string(spec.Kind), Table: spec.Table, File: spec.File, Create: spec.Create}
}

// agentStore carries out Store through migctl_agent's stub; the three
// layouts differ only in the spec term the agent dispatches on.
type agentStore struct {
	c    *erl.Client
	node string
	spec Spec
	st   agentapi.Store
}

func (s *agentStore) Spec() Spec   { return s.spec }
func (s *agentStore) Node() string { return s.node }

func (s *agentStore) agent() agentapi.Agent { return agentapi.Agent{C: s.c} }

// mapErr turns the agent's reason atoms into this package's sentinels with
// a hint for the operator.
func (s *agentStore) mapErr(err error) error {
	var re *erl.RPCError
	if !errors.As(err, &re) {
		return err
	}
	var sent error
	hint := ""
	switch re.Reason {
	case "no_such_table":
		sent, hint = ErrNoSuchTable, "check --table and --store; is the application's backend running on this node?"
		if s.spec.Kind == KindDETS && s.spec.File == "" {
			hint += " A DETS table the application does not have open needs --dets-file (its path on the node)"
		}
	case "no_such_file":
		sent, hint = ErrNoSuchFile, "check --dets-file (a path on the node)"
	case "not_session_rows", "not_session_values", "not_session_attributes", "not_a_session":
		sent, hint = ErrNotSessions, "the table's rows are not erlmcp sessions ({Id, #{id, last_accessed, ...}}); check --table"
	case "needs_repair":
		sent, hint = ErrNeedsRepair, "the file was not closed properly; migctl will not repair it behind your back: back it up, then let the application reopen it (it repairs) or run dets:open_file with {repair, force}"
	case "dets_opening":
		sent, hint = ErrDETSOpening, "the node is opening its DETS file; after a crash DETS repairs the file first (about 80 s for 1.7 GB on the project's test machine) and the application's own calls wait for it too. Try again when `migctl ping` shows the table with its count"
	case "not_a_dets_file":
		sent, hint = ErrNotDETS, "the file is not a DETS table or is corrupted"
	case "mnesia_not_running":
		sent, hint = ErrMnesiaDown, "start mnesia on the node, or use another --node"
	case "no_local_copy":
		sent, hint = ErrNoLocalCopy, "use --node of a node that holds a disc_copies or ram_copies replica"
	default:
		if open, ok := strings.CutPrefix(re.Reason, "dets_other_file: "); ok {
			sent, hint = ErrOtherFile, fmt.Sprintf("table %s is open on the node from %s, not %s: leave out --dets-file to use the open table, or give --table another name to open %s", s.spec.Table, open, s.spec.File, s.spec.File)
		} else if strings.Contains(re.Reason, "badarg") && strings.Contains(re.Reason, "select") {
			sent = ErrCursorExpired
		} else {
			return fmt.Errorf("%s on %s: %w", s.spec, s.node, err)
		}
	}
	return &erl.Error{Op: s.spec.String(), Node: s.node, Err: fmt.Errorf("%w: %w", sent, err), Hint: hint}
}

func (s *agentStore) Describe(ctx context.Context) (Info, error) {
	info := Info{Spec: s.spec, Node: s.node}
	d, err := s.agent().Describe(ctx, s.node, s.st)
	if err != nil {
		return info, s.mapErr(err)
	}
	info.Exists, info.Size, info.Layout, info.Storage, info.File, info.Copies = d.Exists, d.Size, d.Layout, d.Storage, d.File, d.Copies
	return info, nil
}

func (s *agentStore) Count(ctx context.Context) (int64, error) {
	n, err := s.agent().Count(ctx, s.node, s.st)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return n, nil
}

func (s *agentStore) Stream(ctx context.Context, cursor Cursor, limit int) (Batch, error) {
	if limit <= 0 {
		limit = 1000
	}
	r, err := s.agent().Stream(ctx, s.node, s.st, cursor, limit)
	if err != nil {
		return Batch{}, s.mapErr(err)
	}
	rows, err := ParseFrames(r.Frames, r.N)
	if err != nil {
		return Batch{}, err
	}
	b := Batch{Rows: rows, WireBytes: len(r.Frames), Done: r.Done}
	if !r.Done {
		b.Next = Cursor(r.Next)
	}
	return b, nil
}

func (s *agentStore) Get(ctx context.Context, id []byte) ([]byte, bool, error) {
	b, ok, err := s.agent().Get(ctx, s.node, s.st, id)
	if err != nil {
		return nil, false, s.mapErr(err)
	}
	return b, ok, nil
}

func (s *agentStore) Put(ctx context.Context, rows []Row, mode PutMode) (PutResult, error) {
	if len(rows) == 0 {
		return PutResult{}, nil
	}
	w, sk, err := s.agent().Put(ctx, s.node, s.st, AppendFrames(nil, rows), string(mode))
	if err != nil {
		return PutResult{}, s.mapErr(err)
	}
	return PutResult{Written: w, Skipped: sk}, nil
}

func (s *agentStore) Delete(ctx context.Context, ids [][]byte) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := s.agent().Delete(ctx, s.node, s.st, ids)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return n, nil
}

// Checksum is migctl_buckets:sums/3 over one range. A store holding rows
// that are not sessions fails with ErrNotSessions: the sums leave them out,
// and a checksum must not call two stores equal over rows it did not read.
func (s *agentStore) Checksum(ctx context.Context, r HashRange, buckets int, opts ChecksumOptions) ([]BucketSum, error) {
	if buckets <= 0 || r.Hi <= r.Lo || r.Hi > 1<<32 {
		return nil, fmt.Errorf("checksum: bad range %v/%d", r, buckets)
	}
	o := agentapi.SumOptions{}
	if opts.WithLastAccessed {
		o.Digest = agentapi.DigestRecord
	}
	rep, err := agentapi.Buckets{C: s.c}.Sums(ctx, s.node, s.st, []bucketdiff.Range{{Span: r, Buckets: buckets}}, o)
	if err != nil {
		return nil, s.mapErr(err)
	}
	if rep.Odd.N > 0 {
		return nil, &erl.Error{Op: s.spec.String(), Node: s.node,
			Err:  fmt.Errorf("%w: %d rows, e.g. %v", ErrNotSessions, rep.Odd.N, rep.Odd.Keys),
			Hint: "the table's rows are not erlmcp sessions ({Id, #{id, last_accessed, ...}}); check --table"}
	}
	out := make([]BucketSum, buckets)
	for i, b := range rep.Sums {
		out[i] = BucketSum{Count: b.Count, Sum: b.Sum}
	}
	return out, nil
}

func (s *agentStore) Release(ctx context.Context) error {
	if s.spec.Kind != KindDETS {
		return nil
	}
	if err := s.agent().DetsRelease(ctx, s.node, s.spec.Table); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// ParseFrames splits the agent's framing, <<IdLen:32, Id, BlobLen:32, Blob>>*.
// The rows alias frames (no copy).
func ParseFrames(frames []byte, hint int) ([]Row, error) {
	rows := make([]Row, 0, hint)
	for len(frames) > 0 {
		if len(frames) < 4 {
			return nil, errors.New("truncated frame")
		}
		n := int(binary.BigEndian.Uint32(frames))
		if len(frames) < 8+n {
			return nil, errors.New("truncated frame")
		}
		id := frames[4 : 4+n]
		frames = frames[4+n:]
		m := int(binary.BigEndian.Uint32(frames))
		if len(frames) < 4+m {
			return nil, errors.New("truncated frame")
		}
		rows = append(rows, Row{ID: id, Blob: frames[4 : 4+m]})
		frames = frames[4+m:]
	}
	return rows, nil
}

// ParseRows cuts a pushed batch, the term_to_binary of a list of rows
// ({Id, Session} or Mnesia's {Tab, Id, Session, WriteTime}), into Rows
// without decoding the sessions: each Blob is the session's own encoding
// with the version byte in front, byte for byte what term_to_binary of
// the session gives. Blobs alias bin (the byte before each session's
// encoding is overwritten with the version byte); ids are copied into one
// buffer first, because that byte is the last one of the id.
func ParseRows(bin []byte, hint int) ([]Row, error) {
	if len(bin) < 2 || bin[0] != 131 {
		return nil, errors.New("rows: not an external term")
	}
	p := 1
	var n int
	switch bin[p] {
	case 106: // NIL_EXT
		return nil, nil
	case 108: // LIST_EXT
		if len(bin) < p+5 {
			return nil, errors.New("rows: truncated list")
		}
		n = int(binary.BigEndian.Uint32(bin[p+1:]))
		p += 5
	default:
		return nil, fmt.Errorf("rows: not a list (tag %d)", bin[p])
	}
	type span struct{ id, idEnd, s, sEnd int }
	spans := make([]span, 0, min(max(hint, n), len(bin)/8)) // a row takes 8 bytes at least
	idBytes := 0
	for range n {
		if p+2 > len(bin) || bin[p] != 104 { // SMALL_TUPLE_EXT
			return nil, errors.New("rows: a row is not a small tuple")
		}
		arity := int(bin[p+1])
		p += 2
		var idAt int
		switch arity {
		case 2:
			idAt = 0
		case 4:
			idAt = 1
		default:
			return nil, fmt.Errorf("rows: a row of arity %d", arity)
		}
		var sp span
		for i := range arity {
			end, err := term.Skip(bin[p:])
			if err != nil {
				return nil, fmt.Errorf("rows: %w", err)
			}
			switch i {
			case idAt:
				// BINARY_EXT: tag, 4-byte length, the bytes.
				if bin[p] != 109 || end < 5 {
					return nil, errors.New("rows: an id is not a binary")
				}
				sp.id, sp.idEnd = p+5, p+end
				idBytes += end - 5
			case idAt + 1:
				sp.s, sp.sEnd = p, p+end
			}
			p += end
		}
		spans = append(spans, sp)
	}
	if p+1 != len(bin) || bin[p] != 106 {
		return nil, errors.New("rows: not a proper list")
	}
	ids := make([]byte, 0, idBytes)
	rows := make([]Row, len(spans))
	for i, sp := range spans {
		ids = append(ids, bin[sp.id:sp.idEnd]...)
		rows[i].ID = ids[len(ids)-(sp.idEnd-sp.id) : len(ids) : len(ids)]
	}
	for i, sp := range spans {
		bin[sp.s-1] = 131
		rows[i].Blob = bin[sp.s-1 : sp.sEnd : sp.sEnd]
	}
	return rows, nil
}

// AppendFrames is the inverse of ParseFrames.
func AppendFrames(buf []byte, rows []Row) []byte {
	for _, r := range rows {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.ID)))
		buf = append(buf, r.ID...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.Blob)))
		buf = append(buf, r.Blob...)
	}
	return buf
}
