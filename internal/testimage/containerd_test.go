package testimage

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// TestImportAndRun imports the built tar into a real containerd, unpacks
// it and runs the program in a container: its environment, /etc/passwd
// and identity come from the image.
func TestImportAndRun(t *testing.T) {
	ctd := ctdtest.Require(t)
	tar := filepath.Join(t.TempDir(), "img.tar")
	ctx := context.Background()
	if err := Build(ctx, tar, Ref); err != nil {
		t.Fatal(err)
	}
	ns := "testimage-" + strconv.Itoa(os.Getpid())
	cl, err := client.New(ctd.Address, client.WithDefaultNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The namespace and its content go with the shared containerd's Stop.
	ctx = namespaces.WithNamespace(ctx, ns)

	f, err := os.Open(tar)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := cl.Import(ctx, f)
	f.Close()
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != Ref {
		t.Fatalf("imported %+v, want one image %s", imgs, Ref)
	}
	img := client.NewImage(cl, imgs[0])
	if err := img.Unpack(ctx, ""); err != nil {
		t.Fatalf("unpack: %v", err)
	}

	cont, err := cl.NewContainer(ctx, "print-env",
		client.WithNewSnapshot("print-env", img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"print-env", "cat", "/etc/passwd", "print-id"}), oci.WithUserID(1000)))
	if err != nil {
		t.Fatal(err)
	}
	defer cont.Delete(ctx, client.WithSnapshotCleanup)
	// The shim writes the output to a file itself: with FIFO streams
	// (cio.WithStreams) the whole output of this short-lived task was lost
	// in about one run of three against containerd 1.6.20.
	logFile := filepath.Join(t.TempDir(), "log")
	task, err := cont.NewTask(ctx, cio.LogFile(logFile))
	if err != nil {
		t.Fatal(err)
	}
	defer task.Delete(ctx, client.WithProcessKill)
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exitCh:
		if code, _, err := st.Result(); err != nil || code != 0 {
			out, _ := os.ReadFile(logFile)
			t.Fatalf("exit %d (%v), output:\n%s", code, err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("container did not exit within 30s")
	}
	// The shim has written everything once the task is deleted.
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
		"app:x:1000:1000:",
		"uid=1000 gid=1000 groups=",
		"testimage: script done, exit 0",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q (%d bytes):\n%s", want, len(got), got)
		}
	}
}
