package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrBadPlan: a plan file that is not a heal plan (or not a whole one).
var ErrBadPlan = errors.New("not a heal plan")

// ReadPlan reads a plan written by `migctl cluster heal --plan -o json`
// (the JSON of Plan), for `--execute --plan-file`: the heal then does
// exactly that plan, with its winner and split time, or refuses if the
// cluster is no longer split the way it saw (Plan.Matches, checked again
// by the heal's first step). tables are the session tables the heal is
// for; the plan must be for the same ones.
func ReadPlan(r io.Reader, tables []string) (*Plan, error) {
	var p Plan
	dec := json.NewDecoder(r)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPlan, err)
	}
	switch {
	case p.Status == nil:
		return nil, fmt.Errorf("%w: no status (was it written by `cluster heal --plan -o json`?)", ErrBadPlan)
	case len(p.Islands) < 2:
		return nil, fmt.Errorf("%w: %d islands", ErrBadPlan, len(p.Islands))
	case p.Winner < 0 || p.Winner >= len(p.Islands) || p.Islands[p.Winner].Unreachable:
		return nil, fmt.Errorf("%w: winner %d is not a reachable island", ErrBadPlan, p.Winner)
	case len(p.Tables) == 0:
		return nil, fmt.Errorf("%w: no tables", ErrBadPlan)
	}
	var got []string
	for _, t := range p.Tables {
		got = append(got, t.Table)
		for _, l := range t.Losers {
			if l.Island < 0 || l.Island >= len(p.Islands) || l.Island == p.Winner {
				return nil, fmt.Errorf("%w: table %s: loser island %d", ErrBadPlan, t.Table, l.Island)
			}
		}
	}
	want := slices.Clone(tables)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return nil, fmt.Errorf("%w: the plan is for tables %v, this heal for %v", ErrBadPlan, got, want)
	}
	return &p, nil
}
