package agentapi

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/erlmcp/migctl/backends/bucketdiff"
)

// keyFrame builds a frame as migctl_buckets:frame/5 writes it.
func keyFrame(id string, digest uint32, la int64, times []int64) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, digest)
	b = binary.BigEndian.AppendUint64(b, uint64(la))
	for _, t := range times {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	return b
}

func TestParseKeys(t *testing.T) {
	plain := append(keyFrame("a", 7, 100, nil), keyFrame("bb", 8, -1, nil)...)
	got := map[string]Key{}
	if err := parseKeys(plain, false, got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]Key{"a": {Digest: 7, LastAccessed: 100}, "bb": {Digest: 8, LastAccessed: -1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plain frames: %v, want %v", got, want)
	}
	timed := keyFrame("c", 9, -1, []int64{1234, -1})
	got = map[string]Key{}
	if err := parseKeys(timed, true, got); err != nil {
		t.Fatal(err)
	}
	if want := (Key{Digest: 9, LastAccessed: -1, Written: 1234, Created: -1}); got["c"] != want {
		t.Fatalf("timed frame: %+v, want %+v", got["c"], want)
	}
	// A frame cut short, or read with the wrong shape, is an error, not a
	// silent partial map.
	for name, b := range map[string][]byte{
		"truncated":           plain[:len(plain)-1],
		"times expected":      keyFrame("a", 7, 100, nil),
		"length past the end": {0, 0, 0, 9, 'x'},
	} {
		if err := parseKeys(b, name == "times expected", map[string]Key{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseOdd(t *testing.T) {
	b := binary.BigEndian.AppendUint32(nil, 12)
	b = binary.BigEndian.AppendUint32(b, 3)
	b = append(b, "foo"...)
	o, err := ParseOdd(b)
	if err != nil || o.N != 12 || !reflect.DeepEqual(o.Keys, []string{"foo"}) {
		t.Fatalf("ParseOdd = %+v, %v", o, err)
	}
	if _, err := ParseOdd(b[:6]); err == nil {
		t.Fatal("a cut key frame is an error")
	}
	if _, err := ParseOdd(nil); err == nil {
		t.Fatal("an empty Odd is an error (the count is always there)")
	}
}

func TestEncodeRanges(t *testing.T) {
	b := EncodeRanges([]bucketdiff.Range{{Span: bucketdiff.Full, Buckets: 3}, {Span: bucketdiff.Span{Lo: 5, Hi: 9}, Buckets: 1}})
	if len(b) != 40 {
		t.Fatalf("%d bytes, want 2 x <<Lo:64, Hi:64, Buckets:32>>", len(b))
	}
	if binary.BigEndian.Uint64(b[8:]) != 1<<32 || binary.BigEndian.Uint32(b[16:]) != 3 || binary.BigEndian.Uint64(b[20:]) != 5 {
		t.Fatalf("layout: %x", b)
	}
}
