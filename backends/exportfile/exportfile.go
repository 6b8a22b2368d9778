// Package exportfile is migctl's session export format: a self-describing
// file that `migctl sessions import` restores byte-identically, and refuses
// when it has been damaged.
//
// Layout (all integers big-endian):
//
//	"MIGCTLX1"                      8-byte magic, format version 1
//	uint32 n, n bytes of JSON       Header
//	records:                        uint32 idLen, id, uint32 blobLen, blob
//	uint32 0xFFFFFFFF               end of records
//	uint32 n, n bytes of JSON       Trailer: count and the SHA-256 of every
//	                                byte up to and including the end marker
//
// Blobs are the sessions' term_to_binary bytes exactly as the store held
// them, so a file can be diffed, checksummed and imported into any layout.
// The trailer comes last so that export streams in one pass with constant
// memory; import verifies the whole file before it writes anything.
package exportfile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/erlmcp/migctl/backends"
)

const (
	magic     = "MIGCTLX1"
	endMarker = 0xFFFFFFFF
	// maxBlob bounds a record so a damaged length cannot make us allocate
	// gigabytes; DETS itself caps files at 2 GB.
	maxBlob = 256 << 20
)

// ErrCorrupt: the file is damaged or was changed after export.
var ErrCorrupt = errors.New("export file corrupt")

// Header describes where the sessions came from.
type Header struct {
	Version   int           `json:"version"`
	Tool      string        `json:"tool"`
	Node      string        `json:"node"`
	Store     backends.Spec `json:"store"`
	CreatedAt time.Time     `json:"created_at"`
}

// Trailer closes the file.
type Trailer struct {
	Count  int64  `json:"count"`
	SHA256 string `json:"sha256"`
}

// Writer writes an export file.
type Writer struct {
	w     *bufio.Writer
	h     hash.Hash
	mw    io.Writer
	count int64
	buf   [4]byte
}

// NewWriter writes the magic and header.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	h.Version = 1
	bw := bufio.NewWriterSize(w, 1<<20)
	sum := sha256.New()
	x := &Writer{w: bw, h: sum, mw: io.MultiWriter(bw, sum)}
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(x.mw, magic); err != nil {
		return nil, err
	}
	if err := x.u32(uint32(len(hj))); err != nil {
		return nil, err
	}
	if _, err := x.mw.Write(hj); err != nil {
		return nil, err
	}
	return x, nil
}

func (x *Writer) u32(v uint32) error {
	binary.BigEndian.PutUint32(x.buf[:], v)
	_, err := x.mw.Write(x.buf[:])
	return err
}

// Write appends rows.
func (x *Writer) Write(rows []backends.Row) error {
	for _, r := range rows {
		if err := x.u32(uint32(len(r.ID))); err != nil {
			return err
		}
		if _, err := x.mw.Write(r.ID); err != nil {
			return err
		}
		if err := x.u32(uint32(len(r.Blob))); err != nil {
			return err
		}
		if _, err := x.mw.Write(r.Blob); err != nil {
			return err
		}
		x.count++
	}
	return nil
}

// Close writes the end marker and trailer and flushes (it does not close
// the underlying writer).
func (x *Writer) Close() (Trailer, error) {
	if err := x.u32(endMarker); err != nil {
		return Trailer{}, err
	}
	t := Trailer{Count: x.count, SHA256: hex.EncodeToString(x.h.Sum(nil))}
	tj, _ := json.Marshal(t)
	binary.BigEndian.PutUint32(x.buf[:], uint32(len(tj)))
	if _, err := x.w.Write(x.buf[:]); err != nil {
		return t, err
	}
	if _, err := x.w.Write(tj); err != nil {
		return t, err
	}
	return t, x.w.Flush()
}

// Reader reads an export file.
type Reader struct {
	r      *bufio.Reader
	h      hash.Hash
	tr     io.Reader
	Header Header
	count  int64
	done   bool
	trail  Trailer
}

// NewReader reads the magic and header.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	sum := sha256.New()
	x := &Reader{r: br, h: sum, tr: io.TeeReader(br, sum)}
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(x.tr, m); err != nil || string(m) != magic {
		return nil, fmt.Errorf("%w: not a migctl export file (bad magic)", ErrCorrupt)
	}
	n, err := x.u32()
	if err != nil || n > 1<<20 {
		return nil, fmt.Errorf("%w: bad header length", ErrCorrupt)
	}
	hj := make([]byte, n)
	if _, err := io.ReadFull(x.tr, hj); err != nil {
		return nil, fmt.Errorf("%w: short header", ErrCorrupt)
	}
	if err := json.Unmarshal(hj, &x.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	if x.Header.Version != 1 {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrCorrupt, x.Header.Version)
	}
	return x, nil
}

func (x *Reader) u32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(x.tr, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// Next returns up to max rows; io.EOF after the trailer has been read and
// verified. A damaged file yields ErrCorrupt.
func (x *Reader) Next(max int) ([]backends.Row, error) {
	if x.done {
		return nil, io.EOF
	}
	var rows []backends.Row
	for len(rows) < max {
		n, err := x.u32()
		if err != nil {
			return nil, fmt.Errorf("%w: truncated after %d records", ErrCorrupt, x.count)
		}
		if n == endMarker {
			if err := x.finish(); err != nil {
				return nil, err
			}
			if len(rows) == 0 {
				return nil, io.EOF
			}
			return rows, nil
		}
		if n > maxBlob {
			return nil, fmt.Errorf("%w: record %d: id length %d", ErrCorrupt, x.count, n)
		}
		id := make([]byte, n)
		if _, err := io.ReadFull(x.tr, id); err != nil {
			return nil, fmt.Errorf("%w: truncated record %d", ErrCorrupt, x.count)
		}
		m, err := x.u32()
		if err != nil || m > maxBlob {
			return nil, fmt.Errorf("%w: record %d: bad length", ErrCorrupt, x.count)
		}
		blob := make([]byte, m)
		if _, err := io.ReadFull(x.tr, blob); err != nil {
			return nil, fmt.Errorf("%w: truncated record %d", ErrCorrupt, x.count)
		}
		if len(blob) == 0 || blob[0] != 131 {
			return nil, fmt.Errorf("%w: record %d is not a term_to_binary blob", ErrCorrupt, x.count)
		}
		rows = append(rows, backends.Row{ID: id, Blob: blob})
		x.count++
	}
	return rows, nil
}

func (x *Reader) finish() error {
	got := hex.EncodeToString(x.h.Sum(nil))
	var b [4]byte
	if _, err := io.ReadFull(x.r, b[:]); err != nil {
		return fmt.Errorf("%w: missing trailer", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(b[:])
	if n > 1<<16 {
		return fmt.Errorf("%w: bad trailer length", ErrCorrupt)
	}
	tj := make([]byte, n)
	if _, err := io.ReadFull(x.r, tj); err != nil {
		return fmt.Errorf("%w: short trailer", ErrCorrupt)
	}
	if err := json.Unmarshal(tj, &x.trail); err != nil {
		return fmt.Errorf("%w: trailer: %v", ErrCorrupt, err)
	}
	// The trailer is not covered by the checksum: accept only the exact
	// bytes the writer produces (JSON field names match case-insensitively).
	if canon, _ := json.Marshal(x.trail); !bytes.Equal(canon, tj) {
		return fmt.Errorf("%w: trailer altered", ErrCorrupt)
	}
	if x.trail.SHA256 != got {
		return fmt.Errorf("%w: checksum mismatch (file says %s, content is %s)", ErrCorrupt, x.trail.SHA256, got)
	}
	if x.trail.Count != x.count {
		return fmt.Errorf("%w: trailer says %d records, file has %d", ErrCorrupt, x.trail.Count, x.count)
	}
	if _, err := x.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: data after the trailer", ErrCorrupt)
	}
	x.done = true
	return nil
}

// Trailer is valid once Next has returned io.EOF.
func (x *Reader) Trailer() Trailer { return x.trail }

// Verify reads a whole file and checks it, writing nothing.
func Verify(r io.Reader) (Header, Trailer, error) {
	x, err := NewReader(r)
	if err != nil {
		return Header{}, Trailer{}, err
	}
	for {
		_, err := x.Next(4096)
		if err == io.EOF {
			return x.Header, x.trail, nil
		}
		if err != nil {
			return x.Header, x.trail, err
		}
	}
}
