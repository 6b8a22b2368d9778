package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/internal/cliutil"
)

// storeFlags select one session store: --store, --node, --table, --dets-file.
type storeFlags struct {
	store    string
	node     string
	table    string
	detsFile string
	etsTab   string
	detsTab  string
	mnesTab  string
}

func (s *storeFlags) addFlags(cmd *cobra.Command, withStore bool) {
	f := cmd.Flags()
	if withStore {
		f.StringVar(&s.store, "store", "", "session store: ets, dets or mnesia (required)")
		f.StringVar(&s.node, "node", "", "node to use (default: the first of --nodes)")
		f.StringVar(&s.table, "table", "", "table name (default: erlmcp's name for the store)")
	}
	f.StringVar(&s.detsFile, "dets-file", "", "DETS file on the node, when the application does not have the table open (env MIGCTL_DETS_FILE)")
	f.StringVar(&s.etsTab, "ets-table", backends.DefaultETSTable, "ETS session table (env MIGCTL_ETS_TABLE)")
	f.StringVar(&s.detsTab, "dets-table", backends.DefaultDETSTable, "DETS session table (env MIGCTL_DETS_TABLE)")
	f.StringVar(&s.mnesTab, "mnesia-table", backends.DefaultMnesiaTable, "Mnesia session table (env MIGCTL_MNESIA_TABLE)")
	withEnv(f, "dets-file", "MIGCTL_DETS_FILE")
	withEnv(f, "ets-table", "MIGCTL_ETS_TABLE")
	withEnv(f, "dets-table", "MIGCTL_DETS_TABLE")
	withEnv(f, "mnesia-table", "MIGCTL_MNESIA_TABLE")
}

// spec builds the Spec of kind k from the flags.
func (s *storeFlags) specOf(k backends.Kind) backends.Spec {
	sp := backends.DefaultSpec(k)
	switch k {
	case backends.KindETS:
		sp.Table = s.etsTab
	case backends.KindDETS:
		sp.Table = s.detsTab
		sp.File = s.detsFile
	case backends.KindMnesia:
		sp.Table = s.mnesTab
	}
	// --store is case-insensitive (Mnesia, DETS): compare kinds, not spellings.
	if given, err := backends.ParseKind(s.store); s.table != "" && err == nil && given == k {
		sp.Table = s.table
	}
	return sp
}

func (s *storeFlags) allSpecs() []backends.Spec {
	return []backends.Spec{s.specOf(backends.KindETS), s.specOf(backends.KindDETS), s.specOf(backends.KindMnesia)}
}

// open validates the flags and opens the store (no I/O before validation).
func (s *storeFlags) open(ctx context.Context, a *app) (backends.Store, error) {
	if s.store == "" {
		return nil, cliutil.Usage("--store is required (ets, dets or mnesia)")
	}
	k, err := backends.ParseKind(s.store)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err) // backends.ErrUnknownStore: 2
	}
	node := s.node
	if node == "" {
		nodes, err := a.needNodes()
		if err != nil {
			return nil, err
		}
		node = nodes[0]
	} else if len(a.nodes) == 0 {
		a.nodes = []string{node}
	}
	if _, _, err := erl.SplitNode(node); err != nil {
		return nil, cliutil.Usage("--node: %v", err)
	}
	c, err := a.erlClient(ctx)
	if err != nil {
		return nil, err
	}
	return backends.Open(c, node, s.specOf(k))
}
