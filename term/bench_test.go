package term

import (
	"bytes"
	"testing"
)

// benchSession is shaped like an erlmcp session of about 500 bytes.
func benchSession(b *testing.B, extra int) []byte {
	meta := Map{
		{Binary("client"), Binary("claude-desktop")},
		{Binary("user_agent"), Binary("Mozilla/5.0 (X11; Linux x86_64) mcp-client/1.4.2")},
		{Binary("protocol_version"), Binary("2025-06-18")},
		{Binary("capabilities"), List{Elems: []Term{Binary("tools"), Binary("resources"), Binary("prompts"), Binary("sampling")}}},
		{Binary("remote_ip"), Binary("10.12.4.33")},
		{Binary("request_count"), int64(1234)},
		{Binary("tags"), Map{{Atom("env"), Binary("prod")}, {Atom("region"), Binary("eu-west-1")}}},
	}
	if extra > 0 {
		meta = append(meta, MapPair{Binary("blob"), Binary(bytes.Repeat([]byte{7}, extra))})
	}
	return sessionLike(b, meta)
}

func BenchmarkDecodeSession(b *testing.B) {
	s := benchSession(b, 0)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSessionNoCopy(b *testing.B) {
	s := benchSession(b, 0)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	opts := DecodeOptions{NoCopy: true}
	for b.Loop() {
		if _, err := opts.Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSession(b *testing.B) {
	x, err := Decode(benchSession(b, 0))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		if _, err := (EncodeOptions{}).Append(buf[:0], x); err != nil {
			b.Fatal(err)
		}
	}
}

// With 1 MB of metadata, looking up the header keys costs the same as for a
// small session: the metadata is skipped, not decoded.
func BenchmarkLookupMapKeys1MB(b *testing.B) {
	s := benchSession(b, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LookupMapKeys(s, "id", "last_accessed", "timeout_ms"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode1MBNoCopy(b *testing.B) {
	s := benchSession(b, 1<<20)
	b.ReportAllocs()
	opts := DecodeOptions{NoCopy: true}
	for b.Loop() {
		if _, err := opts.Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}
