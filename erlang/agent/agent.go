// Package agent embeds migctl's node-side Erlang modules (compiled from the
// .erl files beside this file with `make agent`, erlc +deterministic) so that
// the migctl binary can push them to a node with code:load_binary/3.
package agent

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.beam
var beams embed.FS

// Module is one compiled module.
type Module struct {
	Name string
	Beam []byte
}

// Modules returns every embedded module, sorted by name.
func Modules() []Module {
	ents, _ := fs.ReadDir(beams, ".")
	var out []Module
	for _, e := range ents {
		b, err := beams.ReadFile(e.Name())
		if err != nil {
			continue
		}
		out = append(out, Module{Name: strings.TrimSuffix(e.Name(), ".beam"), Beam: b})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
