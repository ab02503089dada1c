// Command report gathers the figures `make bench` recorded into one JSON
// file and prints them as a markdown table.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/daemonlet/daemonlet/bench"
)

func main() {
	in := flag.String("in", "bench/out", "folder of recorded figures")
	out := flag.String("json", "bench/results.json", "file to write")
	flag.Parse()
	figs, err := bench.Load(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	b, err := json.MarshalIndent(figs, "", "  ")
	if err == nil {
		err = os.WriteFile(*out, append(b, '\n'), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	host, _ := os.Hostname()
	fmt.Printf("daemonlet benchmarks on %s (%s/%s, %d CPUs)\n\n", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Print(bench.Table(figs))
}
