// Command mkimage writes daemonlet's test and demo image (see
// internal/testimage) as an OCI image layout tar, for `ctr image import`
// or the agent's air-gapped import:
//
//	go run ./scripts/mkimage -o bin/testimage.tar [-ref REF] [-cmd "print-env sleep"]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/daemonlet/daemonlet/internal/testimage"
)

func main() {
	out := flag.String("o", "bin/testimage.tar", "output tar `file`")
	ref := flag.String("ref", testimage.Ref, "image `reference` the tar names")
	cmd := flag.String("cmd", strings.Join(testimage.DefaultCmd, " "), "the image's default Cmd, space-separated `words`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkimage: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if err := testimage.BuildVariant(context.Background(), *out, *ref, strings.Fields(*cmd)); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s\n", *out, *ref)
}
