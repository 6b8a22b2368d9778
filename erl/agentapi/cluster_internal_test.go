package agentapi

import (
	"encoding/binary"
	"testing"
)

// The merge condition frame is what migctl_cluster:merge/3 parses:
// <<Cond:8, Digest:32, Seen:64/signed>>, all zero without evidence.
func TestMergeCondFrame(t *testing.T) {
	if got := (MergeCond{}).frame(nil); len(got) != 13 || string(got) != string(make([]byte, 13)) {
		t.Fatalf("inference frame %v", got)
	}
	got := MergeCond{Evidence: true, WinnerDigest: 0xdeadbeef, WinnerSeenUs: -1}.frame([]byte{9})
	if len(got) != 14 || got[0] != 9 || got[1] != 1 || binary.BigEndian.Uint32(got[2:]) != 0xdeadbeef || int64(binary.BigEndian.Uint64(got[6:])) != -1 {
		t.Fatalf("evidence frame %v", got)
	}
}

func TestIDFrames(t *testing.T) {
	b := idsFrame([]string{"a", "", "xyz"})
	ids, ok := idFrames(b)
	if !ok || len(ids) != 3 || ids[0] != "a" || ids[1] != "" || ids[2] != "xyz" {
		t.Fatalf("round trip: %q %v", ids, ok)
	}
	for cut := 1; cut < len(b); cut++ {
		if ids, ok := idFrames(b[:cut]); ok && len(ids) == 3 {
			t.Fatalf("cut at %d read as complete", cut)
		}
	}
	if _, ok := idFrames(b[:len(b)-1]); ok {
		t.Fatal("a truncated last frame must be an error")
	}
	if _, ok := idFrames("not a binary"); ok {
		t.Fatal("a non-binary must be an error")
	}
}
