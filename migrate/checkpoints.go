package migrate

import (
	"encoding/json"
	"strings"

	"github.com/erlmcp/migctl/journal"
)

// ReadCheckpoints returns the checkpoints that unfinished backfills resume
// from, by "direction:node" key, read from the journal alone. It needs no
// Migrator, client or node: `migctl backfill status` runs on a host that
// may reach no node at all (a bastion holding the shared journal).
// Migrator.Checkpoints is the same read through a Migrator's journal.
func ReadCheckpoints(j *journal.Journal) (map[string]Stats, error) {
	out := map[string]Stats{}
	err := j.ForEachRaw(stateBucket, func(k string, v []byte) error {
		if !strings.HasPrefix(k, "ckpt:") {
			return nil
		}
		var cp checkpoint
		// A checkpoint this version cannot decode is left out, as
		// Migrator.Checkpoints does: the backfill that wrote it restarts
		// that node's pass rather than trusting it.
		if json.Unmarshal(v, &cp) == nil {
			out[strings.TrimPrefix(k, "ckpt:")] = cp.Stats
		}
		return nil
	})
	return out, err
}
