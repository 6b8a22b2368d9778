package migrate

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/erlmcp/migctl/erl"
)

// ArchiveOptions tune ArchiveDETS.
type ArchiveOptions struct {
	// Out is the tar.gz to write (refused if it exists).
	Out string
	// Remote forces streaming through the node even when the files are
	// readable here.
	Remote bool
	DryRun bool
	Reason string
}

// ArchivedFile is one file in the archive.
type ArchivedFile struct {
	Node   string `json:"node"`
	Table  string `json:"table"`
	Source string `json:"source"` // path on the node
	Name   string `json:"name"`   // path in the archive
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Via    string `json:"via"` // local or node
}

// ArchiveReport is ArchiveDETS's answer.
type ArchiveReport struct {
	Path     string         `json:"path"`
	Files    []ArchivedFile `json:"files"`
	SHA256   string         `json:"sha256"` // of the tar.gz
	Verified bool           `json:"verified"`
	Seq      uint64         `json:"seq,omitempty"`
}

// ManifestName is the manifest's name inside the archive (sha256sum format).
const ManifestName = "MANIFEST.sha256"

// ArchiveDETS writes every DETS file the nodes have open (the session
// files and the hybrid's phase file) into one tar.gz with a sha256
// manifest, then reads the archive back and checks every file against the
// manifest and against the sums taken while copying.
//
// The files live on the nodes. When a node runs on this machine (its host
// is a loopback address or this host's name) and the file is readable, it
// is read directly: no load on the node, no bytes through the Erlang
// distribution. Otherwise (or with Remote) it is streamed through the node
// in 1 MiB chunks. Either way the node syncs the table first, so the file
// on disk is complete; run it when nothing writes the DETS files any more
// (phase3 of DETS → Mnesia), or the archive is a copy of a moving target.
func (m *Migrator) ArchiveDETS(ctx context.Context, o ArchiveOptions) (*ArchiveReport, error) {
	if o.Out == "" {
		return nil, errors.New("archive: no output file")
	}
	if _, err := os.Stat(o.Out); err == nil {
		return nil, fmt.Errorf("%w: %s (migctl does not overwrite an archive)", ErrExists, o.Out)
	}
	rep := &ArchiveReport{Path: o.Out}
	type src struct {
		ArchivedFile
		local bool
	}
	var srcs []src
	for _, n := range m.nodes {
		files, err := m.api().DetsFiles(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, df := range files {
			file := df.File
			f := ArchivedFile{Node: n, Table: df.Table, Source: file, Bytes: df.Bytes,
				Name: path.Join(safeName(n), filepath.Base(file))}
			local := !o.Remote && isLocalNode(n) && readable(file)
			f.Via = "node"
			if local {
				f.Via = "local"
			}
			srcs = append(srcs, src{f, local})
		}
	}
	sort.Slice(srcs, func(i, j int) bool { return srcs[i].Name < srcs[j].Name })
	if o.DryRun {
		for _, s := range srcs {
			rep.Files = append(rep.Files, s.ArchivedFile)
		}
		return rep, nil
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("archive: no DETS file open on %s", strings.Join(m.nodes, ", "))
	}
	tmp := o.Out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	whole := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(f, whole))
	gz := gzip.NewWriter(bw)
	tw := tar.NewWriter(gz)
	var manifest strings.Builder
	for _, s := range srcs {
		// Streamed: the file goes from its source through the sum into
		// the archive, so migctl holds one chunk of it, not the file (a
		// DETS file near its 2 GB limit took 2 GB of RSS when read whole).
		// The tar header needs the size first: the size the node gave
		// after syncing the table, and a file that is longer or shorter
		// than that when read is refused as changing under the archive.
		sum := sha256.New()
		hdr := &tar.Header{Name: s.Name, Mode: 0o600, Size: s.Bytes, ModTime: time.Now()}
		if err := tw.WriteHeader(hdr); err != nil {
			f.Close()
			return nil, err
		}
		if err := m.copyFile(ctx, io.MultiWriter(tw, sum), s.ArchivedFile, s.local); err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s on %s: %w", s.Source, s.Node, err)
		}
		s.SHA256 = hex.EncodeToString(sum.Sum(nil))
		fmt.Fprintf(&manifest, "%s  %s\n", s.SHA256, s.Name)
		rep.Files = append(rep.Files, s.ArchivedFile)
	}
	mb := []byte(manifest.String())
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: time.Now()}); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := tw.Write(mb); err != nil {
		f.Close()
		return nil, err
	}
	for _, c := range []io.Closer{tw, gz} {
		if err := c.Close(); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, o.Out); err != nil {
		return nil, err
	}
	rep.SHA256 = hex.EncodeToString(whole.Sum(nil))
	if err := VerifyArchive(o.Out, rep.Files); err != nil {
		return rep, err
	}
	rep.Verified = true
	rep.Seq, err = m.j.Append(KindArchive, o.Reason, rep)
	return rep, err
}

// VerifyArchive reads a tar.gz written by ArchiveDETS and checks every
// entry against its manifest; want (optional) are the sums taken while
// the files were copied.
func VerifyArchive(file string, want []ArchivedFile) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrVerify, file, err)
	}
	tr := tar.NewReader(gz)
	got := map[string]string{}
	var manifest string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrVerify, file, err)
		}
		hs := sha256.New()
		if h.Name == ManifestName {
			b, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			manifest = string(b)
			continue
		}
		if _, err := io.Copy(hs, tr); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrVerify, h.Name, err)
		}
		got[h.Name] = hex.EncodeToString(hs.Sum(nil))
	}
	if manifest == "" {
		return fmt.Errorf("%w: %s has no %s", ErrVerify, file, ManifestName)
	}
	listed := 0
	for _, line := range strings.Split(strings.TrimSpace(manifest), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			return fmt.Errorf("%w: bad manifest line %q", ErrVerify, line)
		}
		listed++
		if got[name] != sum {
			return fmt.Errorf("%w: %s: sha256 %s, manifest says %s", ErrVerify, name, got[name], sum)
		}
	}
	if listed != len(got) {
		return fmt.Errorf("%w: %d files in the archive, %d in the manifest", ErrVerify, len(got), listed)
	}
	for _, w := range want {
		if got[w.Name] != w.SHA256 {
			return fmt.Errorf("%w: %s changed between reading and archiving", ErrVerify, w.Name)
		}
	}
	return nil
}

// errFileChanged: a DETS file was not the size the node gave for it when
// it was read (something still writes it).
var errFileChanged = errors.New("the file changed while it was archived; archive when nothing writes the DETS files any more (phase3)")

// copyFile writes exactly f.Bytes bytes of f.Source to w: from the local
// file, or through the node in 1 MiB chunks.
func (m *Migrator) copyFile(ctx context.Context, w io.Writer, f ArchivedFile, local bool) error {
	if local {
		src, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer src.Close()
		n, err := io.Copy(w, io.LimitReader(src, f.Bytes))
		if err != nil {
			return err
		}
		more, _ := src.Read(make([]byte, 1))
		if n != f.Bytes || more != 0 {
			return fmt.Errorf("%w (%d bytes listed, %d read, more: %v)", errFileChanged, f.Bytes, n, more != 0)
		}
		return nil
	}
	const chunk = 1 << 20
	var off int64
	for off < f.Bytes {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := m.api().ReadChunk(ctx, f.Node, f.Source, off, int(min(chunk, f.Bytes-off)))
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return fmt.Errorf("%w (%d bytes listed, %d read)", errFileChanged, f.Bytes, off)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		off += int64(len(b))
	}
	b, err := m.api().ReadChunk(ctx, f.Node, f.Source, off, 1)
	if err != nil {
		return err
	}
	if len(b) != 0 {
		return fmt.Errorf("%w (%d bytes listed, more on disk)", errFileChanged, f.Bytes)
	}
	return nil
}

func readable(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// isLocalNode: the node's host is this machine.
func isLocalNode(node string) bool {
	_, host, err := erl.SplitNode(node)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	if host == "localhost" {
		return true
	}
	hn, _ := os.Hostname()
	short, _, _ := strings.Cut(hn, ".")
	return host == hn || host == short
}

func safeName(node string) string {
	return strings.NewReplacer("/", "_", "\\", "_").Replace(node)
}
