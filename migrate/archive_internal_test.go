package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCopyFileStreamsExactlyTheListedSize: the archive streams each DETS
// file into the tar under the size the node listed; a file that grew or
// shrank since (something still writes it) is refused, not archived torn.
func TestCopyFileStreamsExactlyTheListedSize(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sessions.dets")
	data := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB: several reads
	require.NoError(t, os.WriteFile(file, data, 0o600))
	m := &Migrator{}
	ctx := context.Background()

	var out bytes.Buffer
	require.NoError(t, m.copyFile(ctx, &out, ArchivedFile{Source: file, Bytes: int64(len(data))}, true))
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(out.Bytes()))

	for _, n := range []int64{int64(len(data)) - 1, int64(len(data)) + 1, 0} {
		out.Reset()
		err := m.copyFile(ctx, &out, ArchivedFile{Source: file, Bytes: n}, true)
		require.ErrorIs(t, err, errFileChanged, "listed %d bytes, file has %d", n, len(data))
	}
}
