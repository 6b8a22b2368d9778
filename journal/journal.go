package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	// ErrOtherCluster: the journal was made for another cluster.
	ErrOtherCluster = errors.New("journal belongs to another cluster")
	// ErrNotFound: no such entry.
	ErrNotFound = errors.New("not found")
	// ErrNoJournal: Options.MustExist or ReadOnly, and there is no
	// journal file at the path ("no journal at PATH").
	ErrNoJournal = errors.New("no journal")
	// ErrReadOnly: a write to a journal opened with Options.ReadOnly.
	ErrReadOnly = errors.New("journal opened read-only")
)

var (
	bucketEntries = []byte("entries")
	bucketMeta    = []byte("meta")
	keyCluster    = []byte("cluster_id")
)

// Entry is one record of the journal.
type Entry struct {
	Seq    uint64          `json:"seq"`
	Time   time.Time       `json:"time"`
	Kind   string          `json:"kind"`
	User   string          `json:"user"`
	Host   string          `json:"host"`
	Reason string          `json:"reason,omitempty"`
	Data   json.RawMessage `json:"data"`
}

// Decode unmarshals the entry's data.
func (e Entry) Decode(v any) error { return json.Unmarshal(e.Data, v) }

// Options tune a Journal.
type Options struct {
	// LockTimeout bounds the wait for another migctl holding the file.
	LockTimeout time.Duration
	// MustExist: the journal file must already exist; Open creates no
	// directory and no file, and fails with ErrNoJournal otherwise (a
	// mistyped --journal is not a new, empty journal).
	MustExist bool
	// ReadOnly opens an existing journal for reading only (implies
	// MustExist): nothing is created or written, every write fails with
	// ErrReadOnly, and readers share the file with each other.
	ReadOnly bool
}

// Journal is a handle on a journal file. It holds no open file between
// operations and is safe for concurrent use.
type Journal struct {
	path string
	opts Options
	user string
	host string
}

// DefaultPath is $MIGCTL_JOURNAL, else $XDG_STATE_HOME/migctl/journal.db,
// else ~/.local/state/migctl/journal.db.
func DefaultPath() string {
	if p := os.Getenv("MIGCTL_JOURNAL"); p != "" {
		return p
	}
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "migctl", "journal.db")
}

// Open prepares a journal at path (created, with its directory, unless
// Options.MustExist or ReadOnly) and checks that it can be opened.
func Open(path string, opts Options) (*Journal, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 10 * time.Second
	}
	j := &Journal{path: path, opts: opts}
	if u, err := user.Current(); err == nil {
		j.user = u.Username
	}
	j.host, _ = os.Hostname()
	if opts.MustExist || opts.ReadOnly {
		st, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w at %s", ErrNoJournal, path)
		case err != nil:
			return nil, fmt.Errorf("open journal: %w", err)
		case st.IsDir():
			return nil, fmt.Errorf("open journal: %s is a directory", path)
		}
	}
	if opts.ReadOnly {
		if err := j.view(func(*bolt.Tx) error { return nil }); err != nil {
			return nil, err
		}
		return j, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := j.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return j, nil
}

// Path is the journal file.
func (j *Journal) Path() string { return j.path }

func (j *Journal) db(readOnly bool) (*bolt.DB, error) {
	db, err := bolt.Open(j.path, 0o600, &bolt.Options{Timeout: j.opts.LockTimeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open journal %s: another migctl holds it (waited %s): %w", j.path, j.opts.LockTimeout, err)
		}
		return nil, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	return db, nil
}

func (j *Journal) update(fn func(*bolt.Tx) error) error {
	if j.opts.ReadOnly {
		return fmt.Errorf("%s: %w", j.path, ErrReadOnly)
	}
	db, err := j.db(false)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(fn)
}

func (j *Journal) view(fn func(*bolt.Tx) error) error {
	db, err := j.db(j.opts.ReadOnly)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(fn)
}

// Bind ties the journal to a cluster identity (for example the Mnesia
// schema's cookie or the sorted node list). The first Bind records it;
// later ones must match.
func (j *Journal) Bind(clusterID string) error {
	return j.update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		have := m.Get(keyCluster)
		if have == nil {
			return m.Put(keyCluster, []byte(clusterID))
		}
		if string(have) != clusterID {
			return fmt.Errorf("%w: %s was made for cluster %q, this is %q; use another --journal", ErrOtherCluster, j.path, have, clusterID)
		}
		return nil
	})
}

// Append adds an entry and returns its sequence number.
func (j *Journal) Append(kind, reason string, data any) (uint64, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	var seq uint64
	err = j.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		seq, _ = b.NextSequence()
		e := Entry{Seq: seq, Time: time.Now().UTC(), Kind: kind, User: j.user, Host: j.host, Reason: reason, Data: raw}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(u64(seq), v)
	})
	return seq, err
}

// Update replaces the data of an entry (a phase change records its result
// when it is done).
func (j *Journal) Update(seq uint64, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return j.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		v := b.Get(u64(seq))
		if v == nil {
			return fmt.Errorf("journal entry %d: %w", seq, ErrNotFound)
		}
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		e.Data = raw
		nv, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(u64(seq), nv)
	})
}

// Get returns one entry.
func (j *Journal) Get(seq uint64) (Entry, error) {
	var e Entry
	err := j.view(func(tx *bolt.Tx) error {
		var v []byte
		if b := tx.Bucket(bucketEntries); b != nil {
			v = b.Get(u64(seq))
		}
		if v == nil {
			return fmt.Errorf("journal entry %d: %w", seq, ErrNotFound)
		}
		return json.Unmarshal(v, &e)
	})
	return e, err
}

// List returns entries of a kind ("" for all), oldest first; limit > 0
// keeps only the newest limit.
func (j *Journal) List(kind string, limit int) ([]Entry, error) {
	if kind == "" {
		return j.ListKinds(nil, limit)
	}
	return j.ListKinds([]string{kind}, limit)
}

// ListKinds returns the entries whose kind is one of kinds (all entries
// when kinds is empty), oldest first; limit > 0 keeps only the newest
// limit.
func (j *Journal) ListKinds(kinds []string, limit int) ([]Entry, error) {
	var out []Entry
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if len(kinds) > 0 && !slices.Contains(kinds, e.Kind) {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
		out[i], out[k] = out[k], out[i]
	}
	return out, err
}

// Prune deletes the entries of kind older than before, oldest first and at
// most limit of them (limit <= 0: no bound), and returns how many it deleted.
// Entries are appended in time order, so it reads from the oldest and stops
// at the first entry (of any kind) not older than before: a call costs the
// entries it deletes plus the older entries of other kinds it keeps (phase
// changes, repairs, heals: never pruned by a monitor). bbolt reuses the
// freed pages, so a journal pruned this way stops growing rather than
// shrinks.
func (j *Journal) Prune(kind string, before time.Time, limit int) (int, error) {
	n := 0
	err := j.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		if b == nil {
			return nil
		}
		var old [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(old) < limit); k, v = c.Next() {
			var e struct {
				Time time.Time `json:"time"`
				Kind string    `json:"kind"`
			}
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("journal entry %x: %w", k, err)
			}
			if !e.Time.Before(before) {
				break
			}
			if e.Kind == kind {
				old = append(old, bytes.Clone(k))
			}
		}
		// Deleted after the walk: a bbolt cursor that deletes as it
		// goes can skip the entry after each deletion.
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// PutState stores v as JSON under bucket/key, replacing what was there.
func (j *Journal) PutState(bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return j.PutRaw(bucket, map[string][]byte{key: raw})
}

// GetState loads bucket/key into v; ok is false when absent.
func (j *Journal) GetState(bucket, key string, v any) (bool, error) {
	raw, err := j.GetRaw(bucket, key)
	if err != nil || raw == nil {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

// DeleteState removes bucket/key.
func (j *Journal) DeleteState(bucket, key string) error {
	return j.update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("state:" + bucket))
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
}

// PutRaw stores several raw values in one transaction (saved sessions
// before a repair overwrites them: all or none).
func (j *Journal) PutRaw(bucket string, kv map[string][]byte) error {
	return j.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("state:" + bucket))
		if err != nil {
			return err
		}
		for k, v := range kv {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetRaw reads one raw value (nil when absent).
func (j *Journal) GetRaw(bucket, key string) ([]byte, error) {
	var out []byte
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("state:" + bucket))
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// ForEachRaw visits every key of a state bucket in key order.
func (j *Journal) ForEachRaw(bucket string, fn func(k string, v []byte) error) error {
	return j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("state:" + bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// Check runs bbolt's consistency check over the file.
func (j *Journal) Check() error {
	return j.view(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}
