// Command mkimage writes daemonlet's test and demo image (see
// internal/testimage) as an OCI image layout tar, for `ctr image import`
// or the agent's air-gapped import:
//
//	go run ./scripts/mkimage -o bin/testimage.tar [-ref REF] [-cmd "print-env sleep"]
//
// With -program FILE the image's program is FILE (a static executable)
// instead of the test program, e.g. the daemonlet binary for
// deploy/bootstrap:
//
//	CGO_ENABLED=0 go build -o bin/daemonlet-static ./cmd/daemonlet
//	go run ./scripts/mkimage -program bin/daemonlet-static -cmd server \
//		-ref daemonlet.local/daemonlet:dev -o bin/daemonlet-image.tar
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
	program := flag.String("program", "", "a static executable `file` to pack instead of the test program")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkimage: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if *program != "" {
		var bin []byte
		if bin, err = os.ReadFile(*program); err == nil {
			err = testimage.BuildProgram(*out, *ref, bin, strings.Fields(*cmd))
		}
	} else {
		err = testimage.BuildVariant(context.Background(), *out, *ref, strings.Fields(*cmd))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s\n", *out, *ref)
}
