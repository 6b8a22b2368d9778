package migrate

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A rerun with --replicate-after after an interrupted one removes what the
// earlier run removed (journaled, some perhaps back meanwhile) and any
// replica that appeared since, each node once, keeping the earlier type.
func TestMergeCopies(t *testing.T) {
	earlier := []ReplicaCopy{{"b", "disc_copies"}, {"c", "ram_copies"}}
	now := []ReplicaCopy{{"c", "disc_copies"}, {"d", "disc_copies"}}
	require.Equal(t, []ReplicaCopy{{"b", "disc_copies"}, {"c", "ram_copies"}, {"d", "disc_copies"}}, mergeCopies(earlier, now))
	require.Equal(t, now, mergeCopies(nil, now))
	require.Equal(t, earlier, mergeCopies(earlier, nil))
}

func TestCopyList(t *testing.T) {
	require.Equal(t, "[]", copyList(nil))
	require.Equal(t, "[b, c (ram_copies)]", copyList([]ReplicaCopy{{"b", "disc_copies"}, {"c", "ram_copies"}}))
}
