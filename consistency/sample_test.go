package consistency_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/consistency"
)

// A slot sample must find planted differences of every kind at the rate
// they occur in the union of the stores: sessions missing from the target,
// changed on it, and held by the target only. The damage is planted in one
// block of the ids (the first 30 % in sorted order, a third of it of each
// kind), so a sample that favoured some part of the key space (the first
// N, one side's slots, one end of a table) would see it at another rate,
// and one blind to the target's own rows would see no extra rows at all.
// The same seed draws the same sample.
func TestSampleBySlotsFindsPlantedDifferences(t *testing.T) {
	const n = 6000
	p := newPair(t, 2, n)
	ctx := tctx(t)
	block := 3 * n / 10
	for i := 0; i < block; i++ {
		p.eval(t, p.ids[i], []string{deleteTarget, corruptTarget, extraTarget}[i%3]+", ok")
	}
	// Each kind is n/10 sessions of a union of n + n/10.
	want := float64(n/10) / float64(n+n/10)
	for _, m := range []consistency.SampleMethod{consistency.SampleSlots, consistency.SampleDETSSlots, consistency.SampleAuto} {
		o := p.opts()
		o.Sample = 1500
		o.Rechecks = -1
		o.SampleMethod = m
		o.Seed = 7
		rep, err := consistency.Check(ctx, p.src, p.tgt, o)
		require.NoError(t, err)
		t.Logf("%q: processed %d mismatched %d missing %d extra %d, %d bytes in %s", m, rep.Processed, rep.Mismatched, rep.MissingInTarget, rep.ExtraInTarget, rep.BytesMoved, rep.Duration)
		require.InDelta(t, 1500*1.1, rep.Processed, 1500*1.1*0.25, m)
		for _, k := range []consistency.Kind{consistency.KindMismatched, consistency.KindMissingInTarget, consistency.KindExtraInTarget} {
			frac := float64(rep.Count(k)) / float64(rep.Processed)
			require.InDelta(t, want, frac, 0.03, "%s: %s", m, k)
		}
		// Every difference the sample reports is a planted one.
		planted := map[string]bool{}
		for i := 0; i < block; i++ {
			planted[p.ids[i]] = true
			planted[p.ids[i]+"-extra"] = true
		}
		for _, d := range rep.Differences {
			require.True(t, planted[d.ID], "%s: %+v was not planted", m, d)
		}
		// Reproducible: the same seed, the same sample.
		again, err := consistency.Check(ctx, p.src, p.tgt, o)
		require.NoError(t, err)
		require.Equal(t, rep.Processed, again.Processed, m)
		require.ElementsMatch(t, rep.Differences, again.Differences, m)
	}
}
