package agentapi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The frames of the sample calls: slots as <<Slot:32>>*, ids as
// <<IdLen:32, Id>>*; a truncated id frame is an error, not a short list.
func TestSampleFrames(t *testing.T) {
	require.Equal(t, []byte{0, 0, 0, 1, 0, 0, 1, 0}, EncodeSlots([]uint32{1, 256}))
	ids := []string{"a", "", "0123456789"}
	got, err := sampleIDFrames(EncodeIDs(ids))
	require.NoError(t, err)
	require.Equal(t, ids, got)
	b := EncodeIDs([]string{"abc"})
	_, err = sampleIDFrames(b[:len(b)-1])
	require.Error(t, err)
	_, err = sampleIDFrames([]byte{0, 0})
	require.Error(t, err)
}
