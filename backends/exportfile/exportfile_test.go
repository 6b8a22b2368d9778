package exportfile

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
)

func sample() []backends.Row {
	return []backends.Row{
		{ID: []byte("A1"), Blob: []byte{131, 100, 0, 1, 'x'}},
		{ID: []byte("séance"), Blob: []byte{131, 106}},
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Node: "n@h", Store: backends.DefaultSpec(backends.KindDETS)})
	require.NoError(t, err)
	require.NoError(t, w.Write(sample()))
	tr, err := w.Close()
	require.NoError(t, err)
	require.EqualValues(t, 2, tr.Count)

	r, err := NewReader(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, "n@h", r.Header.Node)
	rows, err := r.Next(10)
	require.NoError(t, err)
	require.Equal(t, sample(), rows)
	_, err = r.Next(10)
	require.Equal(t, io.EOF, err)
	require.Equal(t, tr, r.Trailer())
}

func TestDamageIsRefused(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{})
	require.NoError(t, w.Write(sample()))
	_, _ = w.Close()
	good := buf.Bytes()
	for i := len(magic) + 4; i < len(good); i++ {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0x20
		_, _, err := Verify(bytes.NewReader(bad))
		require.ErrorIs(t, err, ErrCorrupt, "flipped byte %d not detected", i)
	}
	for n := 0; n < len(good); n += 7 {
		_, _, err := Verify(bytes.NewReader(good[:n]))
		require.ErrorIs(t, err, ErrCorrupt, "truncation at %d not detected", n)
	}
}

func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{})
	_ = w.Write(sample())
	_, _ = w.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = Verify(bytes.NewReader(b))
	})
}
