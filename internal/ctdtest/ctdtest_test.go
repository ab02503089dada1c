package ctdtest_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/testimage"
	"github.com/moby/sys/mountinfo"
)

var (
	imageOnce sync.Once
	imageDir  string
	imageErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

// testImageTar builds the test image once for the test binary.
func testImageTar(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "ctdtest-image-")
		if imageErr == nil {
			imageErr = testimage.Build(context.Background(), filepath.Join(imageDir, "testimage.tar"), testimage.Ref)
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return filepath.Join(imageDir, "testimage.tar")
}

// startPrivate starts a containerd of the test's own, with a namespace of
// its own (cgroups are named /<namespace>/<id>, and other test binaries run
// containerds at the same time), and imports and unpacks the test image.
// The returned stop func must be called exactly once by the test; if the
// test ends before, cleanup stops containerd and prints its log.
func startPrivate(t *testing.T, name string) (*ctdtest.Containerd, *client.Client, client.Image, func() error) {
	t.Helper()
	ctdtest.RequireRoot(t)
	if _, err := ctdtest.Binary(); err != nil {
		ctdtest.Unavailable(t, "%v", err)
	}
	tar := testImageTar(t)
	dir, err := os.MkdirTemp("", "ctd-")
	if err != nil {
		t.Fatal(err)
	}
	ctd, err := ctdtest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			t.Logf("containerd log:\n%s", ctd.Log())
			_ = ctd.Stop()
		}
	})
	ctd.Namespace = name + "-" + strconv.Itoa(os.Getpid())
	cl, err := ctd.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	img := importTestImage(t, context.Background(), cl, tar)
	return ctd, cl, img, func() error {
		stopped = true
		return ctd.Stop()
	}
}

// TestStartRunStop runs a container of the test image on a private
// containerd, restarts containerd under a running container, and checks
// that Stop leaves no process, mount, directory or cgroup behind.
func TestStartRunStop(t *testing.T) {
	ctd, cl, img, stop := startPrivate(t, "ctdtest")
	ctx := context.Background()

	if code := runToExit(t, ctx, cl, img, "exit3", "exit", "3"); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}

	sleeperPid := startSleeper(t, ctx, cl, img)
	oldPid := ctd.Pid()
	if err := ctd.Restart(); err != nil {
		t.Fatal(err)
	}
	if ctd.Pid() == oldPid || ctd.Pid() == 0 {
		t.Fatalf("containerd pid %d after restart, was %d", ctd.Pid(), oldPid)
	}
	if !alive(sleeperPid) {
		t.Fatalf("task pid %d did not survive the containerd restart", sleeperPid)
	}
	cl2, err := ctd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	cont, err := cl2.LoadContainer(ctx, "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task after restart: %v", err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("task after restart: %v %v", st.Status, err)
	}

	daemonPid := ctd.Pid()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v\nlog:\n%s", err, ctd.Log())
	}
	if !strings.Contains(ctd.Log(), "containerd successfully booted") {
		t.Errorf("Log after Stop lost the daemon's log:\n%s", ctd.Log())
	}
	checkNothingLeft(t, ctd, daemonPid, sleeperPid)
}

// TestStopAfterDaemonDied kills containerd under a running container:
// Stop must then find the shim and the container by /proc, kill them,
// unmount the rootfs the dead shim left mounted and remove everything.
func TestStopAfterDaemonDied(t *testing.T) {
	ctd, cl, img, stop := startPrivate(t, "ctdtest-died")
	ctx := context.Background()
	sleeperPid := startSleeper(t, ctx, cl, img)
	daemonPid := ctd.Pid()
	if err := syscall.Kill(daemonPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ctd.Pid() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("containerd did not die on SIGKILL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(ctd.Dir))
	if err != nil || len(mounts) == 0 {
		t.Fatalf("expected the container's rootfs mounted under %s: %v", ctd.Dir, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	checkNothingLeft(t, ctd, daemonPid, sleeperPid)
}

// startSleeper starts the container "sleeper" running forever and returns
// its pid.
func startSleeper(t *testing.T, ctx context.Context, cl *client.Client, img client.Image) int {
	t.Helper()
	cont, err := cl.NewContainer(ctx, "sleeper",
		client.WithNewSnapshot("sleeper-snap", img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep"})))
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return int(task.Pid())
}

func checkNothingLeft(t *testing.T, ctd *ctdtest.Containerd, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still alive after Stop", pid)
		}
	}
	if pids := processesNaming(ctd.Dir); len(pids) > 0 {
		t.Errorf("processes of %s left after Stop: %v", ctd.Dir, pids)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(ctd.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) > 0 {
		t.Errorf("%d mounts left under %s", len(mounts), ctd.Dir)
	}
	if _, err := os.Stat(ctd.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", ctd.Dir, err)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + ctd.Namespace); len(left) > 0 {
		t.Errorf("cgroups left after Stop: %v", left)
	}
}

func importTestImage(t *testing.T, ctx context.Context, cl *client.Client, tar string) client.Image {
	t.Helper()
	f, err := os.Open(tar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs, err := cl.Import(ctx, f)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != testimage.Ref {
		t.Fatalf("imported %+v, want one image %s", imgs, testimage.Ref)
	}
	img := client.NewImage(cl, imgs[0])
	if err := img.Unpack(ctx, ""); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	return img
}

// runToExit runs a new container of img with args as its Cmd (the image's
// Entrypoint stays) and returns its exit code.
func runToExit(t *testing.T, ctx context.Context, cl *client.Client, img client.Image, id string, args ...string) uint32 {
	t.Helper()
	cont, err := cl.NewContainer(ctx, id,
		client.WithNewSnapshot(id+"-snap", img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, args)))
	if err != nil {
		t.Fatal(err)
	}
	defer cont.Delete(ctx, client.WithSnapshotCleanup)
	task, err := cont.NewTask(ctx, cio.NullIO)
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
		code, _, err := st.Result()
		if err != nil {
			t.Fatal(err)
		}
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("container did not exit within 30s")
		return 0
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// processesNaming lists pids whose command line mentions dir.
func processesNaming(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir+"/")) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
