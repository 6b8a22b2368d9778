package consistency_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
)

// Compare erlmcp's DETS store on one node with the replicated Mnesia table
// read on another, from Go without the CLI.
func ExampleCheck() {
	ctx := context.Background()
	c, err := erl.Start(ctx, erl.Options{Cookie: "secret", Host: "127.0.0.1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	src, _ := backends.Open(c, "erlmcp@node1", backends.DefaultSpec(backends.KindDETS))
	tgt, _ := backends.Open(c, "erlmcp@node2", backends.DefaultSpec(backends.KindMnesia))
	rep, err := consistency.Check(ctx, src, tgt, consistency.Options{
		Client: c,
		Sample: 10000, // or 0 for a full check
		Rule:   consistency.Rule{LastAccessedTolerance: 2 * time.Minute},
	})
	if err != nil {
		log.Fatal(err) // could not check
	}
	fmt.Printf("%d compared, %d mismatched, %d missing, %d extra\n",
		rep.Processed, rep.Mismatched, rep.MissingInTarget, rep.ExtraInTarget)
	for _, d := range rep.Samples[consistency.KindMismatched] {
		fmt.Println(d.ID, d.Diff)
	}
}
