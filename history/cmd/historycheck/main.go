// Command historycheck judges load generator histories (files written by
// erlmcp_loadgen:history/2, e.g. by `scripts/devcluster.sh load history`)
// with package history and prints its report. `make demo` runs it.
//
//	historycheck [-watch watch.log] [-split START/END]... [-vis DIR] FILE...
//
// Exit codes: 0 linearizable (and every heal kept its rule), 4 the check
// found problems, 2 bad input.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/erlmcp/migctl/history"
)

type splits []history.Window

func (s *splits) String() string { return fmt.Sprint(*s) }

func (s *splits) Set(v string) error {
	a, b, ok := strings.Cut(v, "/")
	if !ok {
		return errors.New("want START/END (RFC 3339)")
	}
	st, err := time.Parse(time.RFC3339Nano, a)
	if err != nil {
		return err
	}
	en, err := time.Parse(time.RFC3339Nano, b)
	if err != nil {
		return err
	}
	*s = append(*s, history.Window{Start: st, End: en})
	return nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("historycheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sp splits
	fs.Var(&sp, "split", "a split window START/END (RFC 3339); repeatable")
	watch := fs.String("watch", "", "a `migctl cluster watch` log: every PARTITIONED .. HEALTHY stretch is a split window")
	before := fs.Duration("before", 2*time.Second, "widen -watch windows this much before")
	after := fs.Duration("after", 5*time.Second, "widen -watch windows this much after (the heal's verify runs after HEALTHY)")
	vis := fs.String("vis", "", "write porcupine's visualization of failed keys here")
	timeout := fs.Duration("key-timeout", 10*time.Second, "porcupine's limit per key")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "historycheck: no history files")
		return 2
	}
	if *watch != "" {
		f, err := os.Open(*watch)
		if err != nil {
			fmt.Fprintln(stderr, "historycheck:", err)
			return 2
		}
		w, err := history.WindowsFromWatchLog(f, *before, *after)
		f.Close()
		if err != nil {
			fmt.Fprintln(stderr, "historycheck:", err)
			return 2
		}
		sp = append(sp, w...)
	}
	h, err := history.ReadFiles(fs.Args()...)
	if err != nil {
		fmt.Fprintln(stderr, "historycheck:", err)
		return 2
	}
	res, err := history.Check(context.Background(), h, history.Options{Splits: sp, VisualizeDir: *vis, KeyTimeout: *timeout})
	if err != nil {
		fmt.Fprintln(stderr, "historycheck:", err)
		return 2
	}
	res.Report(stdout)
	if !res.OK() {
		return 4
	}
	return 0
}
