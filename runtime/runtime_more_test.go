package runtime

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/daemonlet/daemonlet/internal/testimage"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// logMessages returns what the container wrote, without the CRI log's
// timestamps, streams and tags: partial lines are joined again.
func logMessages(t *testing.T, text string) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a CRI log line: %q", line)
		}
		b.WriteString(m[4])
		if m[3] == "F" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// logOf waits until the container's first log holds one of wants and
// returns what the container wrote. Scripts that may fail are waited on
// with both their success and their failure line, so that a failure is
// reported at once rather than after a timeout.
func (e *testEnv) logOf(t *testing.T, pod *Pod, container string, wants ...string) string {
	t.Helper()
	path := filepath.Join(e.rt.PodLogDir(pod), container, "0.log")
	var text string
	waitFor(t, 20*time.Second, fmt.Sprintf("one of %q in %s", wants, path), func() (bool, error) {
		b, err := os.ReadFile(path)
		text = string(b)
		return slices.ContainsFunc(wants, func(w string) bool { return strings.Contains(text, w) }), err
	})
	return logMessages(t, text)
}

// runToEnd runs the pod's first container until it exits, and returns the
// sandbox, the container's final status and what it wrote, once its log
// holds one of wants: the log driver may still be writing when the task
// has exited.
func (e *testEnv) runToEnd(t *testing.T, pod *Pod, wants ...string) (*Sandbox, Container, string) {
	t.Helper()
	sb, id := e.run(t, pod)
	st := e.waitExited(t, id, 20*time.Second)
	return sb, st, e.logOf(t, pod, pod.Spec.Containers[0].Name, wants...)
}

// startContainer creates and starts container i of the pod in its sandbox.
func (e *testEnv) startContainer(t *testing.T, pod *Pod, sb *Sandbox, i int) string {
	t.Helper()
	ctx := context.Background()
	id, err := e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[i], 0, false)
	if err != nil {
		t.Fatalf("create %s: %v", pod.Spec.Containers[i].Name, err)
	}
	if err := e.rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("start %s: %v", pod.Spec.Containers[i].Name, err)
	}
	return id
}

// scriptDone is what the test program logs when its script ran to the end.
const scriptDone = "testimage: script done, exit 0"

func TestHostNetworkPod(t *testing.T) {
	e := newTestEnv(t)
	port := freePort(t)
	pod := newPod("hostnet", "cat", "/etc/hostname", "print-hostname", "serve-http", strconv.Itoa(port))
	pod.Spec.HostNetwork = true
	pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	sb, _ := e.run(t, pod)
	if sb.IP != e.cfg.HostIP || sb.NetNSPath != "" {
		t.Errorf("sandbox IP %q netns %q, want the host IP %s and no netns", sb.IP, sb.NetNSPath, e.cfg.HostIP)
	}
	httpOK(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	out := e.logOf(t, pod, "main", "serve-http on")
	lines := strings.Split(out, "\n")
	if !slices.Contains(lines, host) || !slices.Contains(lines, "hostname="+host) {
		t.Errorf("want /etc/hostname and the UTS hostname to be the node's %q:\n%s", host, out)
	}
}

// nsLink is the namespace of kind of the process pid, as "ipc:[inode]".
func nsLink(t *testing.T, pid any, kind string) string {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%v/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// hostNSLink is the test process's own namespace of kind. It is read from
// the calling thread, not from /proc/self: the thread group leader may be
// the thread that a sandbox's namespace setup left locked in a pod's
// namespace (Go parks rather than ends the main thread).
func hostNSLink(t *testing.T, kind string) string {
	t.Helper()
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	return nsLink(t, "thread-self", kind)
}

func TestContainersOfAPodShareNetworkIPCAndEmptyDir(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("pair", "write-file", "/shared/msg", "hello-from-server", "serve-http", "8080")
	pod.Spec.Volumes = []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	server := &pod.Spec.Containers[0]
	server.Name = "server"
	server.VolumeMounts = []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	client := *server.DeepCopy()
	client.Name = "client"
	client.Args = []string{"cat", "/shared/msg", "get", "http://127.0.0.1:8080/", "sleep"}
	pod.Spec.Containers = append(pod.Spec.Containers, client)

	sb, serverID := e.run(t, pod)
	// The client starts once the server listens, as its GET is not retried.
	e.readLog(t, pod, "server", 0, "serve-http on")
	clientID := e.startContainer(t, pod, sb, 1)
	out := e.logOf(t, pod, "client", "sleep forever", "testimage: get: ")
	if !strings.Contains(out, "hello-from-server\n") || !strings.Contains(out, "get http://127.0.0.1:8080/: 200 ok\n") {
		t.Errorf("the client did not read the server's file and reach it on localhost:\n%s", out)
	}

	ctx := context.Background()
	var pids []uint32
	for _, id := range []string{serverID, clientID} {
		st, err := e.rt.ContainerStatus(ctx, id)
		if err != nil || st.PID == 0 {
			t.Fatalf("status of %s: %+v, %v", id, st, err)
		}
		pids = append(pids, st.PID)
	}
	for _, kind := range []struct {
		name    string
		sandbox string
	}{{"ipc", sb.IPCNSPath}, {"net", sb.NetNSPath}, {"uts", sb.UTSNSPath}} {
		a, b := nsLink(t, pids[0], kind.name), nsLink(t, pids[1], kind.name)
		var st unix.Stat_t
		if err := unix.Stat(kind.sandbox, &st); err != nil {
			t.Fatal(err)
		}
		pinned := fmt.Sprintf("%s:[%d]", kind.name, st.Ino)
		if a != b || a != pinned || a == hostNSLink(t, kind.name) {
			t.Errorf("%s namespaces: server %s, client %s, want both the sandbox's %s, not the host's", kind.name, a, b, pinned)
		}
	}
	// Without shareProcessNamespace each container has its own PID and
	// mount namespaces.
	for _, kind := range []string{"pid", "mnt"} {
		if a, b := nsLink(t, pids[0], kind), nsLink(t, pids[1], kind); a == b {
			t.Errorf("%s namespace %s shared by both containers", kind, a)
		}
	}
}

func TestHostPIDSeesTheHostsProcesses(t *testing.T) {
	e := newTestEnv(t)
	hostInit, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		hostPID bool
		want    string
	}{
		{true, strings.TrimSpace(string(hostInit))},
		{false, strings.TrimPrefix(testimage.BinaryPath, "/")},
	} {
		t.Run(fmt.Sprintf("hostPID=%v", tc.hostPID), func(t *testing.T) {
			pod := newPod(fmt.Sprintf("hostpid-%v", tc.hostPID), "cat", "/proc/1/comm")
			pod.Spec.HostPID = tc.hostPID
			_, st, out := e.runToEnd(t, pod, scriptDone)
			if st.ExitCode != 0 || !slices.Contains(strings.Split(out, "\n"), tc.want) {
				t.Errorf("exit %d, PID 1 is not %q:\n%s", st.ExitCode, tc.want, out)
			}
		})
	}
}

func TestSecurityContextInContainers(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	withScratch := func(pod *Pod) {
		pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	}

	t.Run("users and groups", func(t *testing.T) {
		pod := newPod("ids", "print-id")
		uid, gid, fsGroup := int64(1000), int64(1000), int64(3000)
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsUser: &uid, RunAsGroup: &gid, SupplementalGroups: []int64{2000}, FSGroup: &fsGroup,
		}
		_, _, out := e.runToEnd(t, pod, scriptDone)
		var ids, groups []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 && strings.HasPrefix(f[0], "uid=") {
				ids, groups = f[:2], strings.Split(strings.TrimPrefix(f[2], "groups="), ",")
			}
		}
		if !slices.Equal(ids, []string{"uid=1000", "gid=1000"}) || !slices.Contains(groups, "2000") || !slices.Contains(groups, "3000") {
			t.Errorf("want uid=1000 gid=1000 and groups with 2000 and 3000:\n%s", out)
		}
	})

	t.Run("runAsNonRoot with a root image", func(t *testing.T) {
		pod := newPod("nonroot", "sleep")
		yes := true
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: &yes}
		sb, err := e.rt.RunSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "runAsNonRoot") {
			t.Errorf("err = %v, want FailedPrecondition naming runAsNonRoot", err)
		}
		if _, err := e.raw.LoadContainer(e.rt.ctx(ctx), ContainerID(pod.UID, "main", 0)); !errdefs.IsNotFound(err) {
			t.Errorf("a container was made anyway (%v)", err)
		}
	})

	t.Run("readOnlyRootFilesystem", func(t *testing.T) {
		pod := newPod("readonly", "write-file", "/scratch/ok", "volume-writable", "write-file", "/x", "root-writable")
		withScratch(pod)
		yes := true
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes}
		sb, st, out := e.runToEnd(t, pod, scriptDone, "testimage: write-file: ")
		if st.ExitCode == 0 || !strings.Contains(out, "read-only file system") {
			t.Errorf("writing /x: exit %d, want a read-only file system error:\n%s", st.ExitCode, out)
		}
		if b, err := os.ReadFile(filepath.Join(sb.EmptyDirPath("scratch"), "ok")); err != nil || string(b) != "volume-writable" {
			t.Errorf("emptyDir file %q, %v: want the volume writable", b, err)
		}
	})

	// chown to another user needs CAP_CHOWN, even for root.
	for _, tc := range []struct {
		name    string
		caps    *corev1.Capabilities
		wantUID uint32
	}{
		{"default capabilities chown", nil, 1000},
		{"drop ALL cannot chown", &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := newPod("caps", "write-file", "/scratch/f", "x", "chown", "/scratch/f", "1000")
			withScratch(pod)
			pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: tc.caps}
			sb, st, out := e.runToEnd(t, pod, scriptDone, "testimage: chown: ")
			if (st.ExitCode == 0) != (tc.wantUID == 1000) {
				t.Errorf("exit %d:\n%s", st.ExitCode, out)
			}
			var fst unix.Stat_t
			if err := unix.Stat(filepath.Join(sb.EmptyDirPath("scratch"), "f"), &fst); err != nil || fst.Uid != tc.wantUID {
				t.Errorf("file owner %d (%v), want %d", fst.Uid, err, tc.wantUID)
			}
		})
	}

	for _, privileged := range []bool{false, true} {
		t.Run(fmt.Sprintf("privileged=%v mount", privileged), func(t *testing.T) {
			pod := newPod("mounter", "mount-tmpfs", "/mnt/t", "cat", "/proc/self/mountinfo")
			pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
			_, st, out := e.runToEnd(t, pod, scriptDone, "testimage: mount-tmpfs /mnt/t: ")
			mounted := slices.ContainsFunc(strings.Split(out, "\n"), func(line string) bool {
				f := strings.Fields(line)
				return len(f) > 4 && f[4] == "/mnt/t" && strings.Contains(line, " - tmpfs ")
			})
			if (st.ExitCode == 0) != privileged || mounted != privileged {
				t.Errorf("exit %d, tmpfs mounted %v, want both only when privileged:\n%s", st.ExitCode, mounted, out)
			}
		})
	}
}

// bindOnItself makes a fresh directory a mount point of its own with the
// given propagation (unix.MS_SHARED or unix.MS_PRIVATE), whatever the
// propagation of the file system holding it, and unmounts everything at and
// below it when the test ends.
func bindOnItself(t *testing.T, propagation uintptr) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() {
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil {
			t.Error(err)
		}
		points := make([]string, 0, len(mounts))
		for _, m := range mounts {
			points = append(points, m.Mountpoint)
		}
		slices.Sort(points)
		slices.Reverse(points)
		for _, p := range points {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				t.Errorf("unmount %s: %v", p, err)
			}
		}
	})
	if err := unix.Mount("", dir, "", propagation, ""); err != nil {
		t.Fatalf("set propagation of %s: %v", dir, err)
	}
	return dir
}

func TestMountPropagationWithHost(t *testing.T) {
	// The mounts are made before the test env so that their cleanup runs
	// after the env's: the containers are gone when the mounts go.
	shared := bindOnItself(t, unix.MS_SHARED)
	shared2 := bindOnItself(t, unix.MS_SHARED)
	private := bindOnItself(t, unix.MS_PRIVATE)
	e := newTestEnv(t)
	ctx := context.Background()
	mountPod := func(name, hostDir string, mode corev1.MountPropagationMode, privileged bool, args ...string) *Pod {
		pod := newPod(name, args...)
		pod.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}}
		c := &pod.Spec.Containers[0]
		c.VolumeMounts = []corev1.VolumeMount{{Name: "h", MountPath: "/h", MountPropagation: &mode}}
		c.SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
		return pod
	}

	t.Run("Bidirectional", func(t *testing.T) {
		pod := mountPod("bidi", shared, corev1.MountPropagationBidirectional, true,
			"mount-tmpfs", "/h/sub", "write-file", "/h/sub/file", "from-container", "sleep")
		e.run(t, pod)
		e.logOf(t, pod, "main", "sleep forever", "testimage: mount-tmpfs /h/sub: ")
		// Without propagation the file lands in a tmpfs only the container
		// sees, and the host's sub stays an empty directory.
		if b, err := os.ReadFile(filepath.Join(shared, "sub", "file")); err != nil || string(b) != "from-container" {
			t.Errorf("host reads %q, %v: want the container's tmpfs mount propagated", b, err)
		}
	})

	t.Run("HostToContainer", func(t *testing.T) {
		pod := mountPod("h2c", shared2, corev1.MountPropagationHostToContainer, false, "sleep")
		_, id := e.run(t, pod)
		e.readLog(t, pod, "main", 0, "sleep forever")
		late := filepath.Join(shared2, "late")
		if err := os.Mkdir(late, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(late, "file"), []byte("from-host"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, err := e.rt.Exec(ctx, id, []string{testimage.BinaryPath, "cat", "/h/late/file"})
		if err != nil || code != 0 || !strings.Contains(string(out), "from-host") {
			t.Errorf("container reads %q (exit %d, %v): want the host's later mount", out, code, err)
		}
	})

	t.Run("Bidirectional from a private mount", func(t *testing.T) {
		pod := mountPod("bidi-private", private, corev1.MountPropagationBidirectional, true, "sleep")
		sb, err := e.rt.RunSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "spec.containers[0].volumeMounts[0].mountPropagation") {
			t.Errorf("err = %v, want FailedPrecondition naming spec.containers[0].volumeMounts[0].mountPropagation", err)
		}
	})
}

func TestPodDNSAndHostsFilesInContainer(t *testing.T) {
	e := newTestEnv(t)
	// A node resolv.conf of the test's own, written in the order the pod's
	// is rendered, so that "copied" can be checked byte for byte.
	const node = "search node.example\nnameserver 192.0.2.53\noptions ndots:2\n"
	e.rt.sandboxes.nodeResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(e.rt.sandboxes.nodeResolvConf, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	three := "3"
	for _, tc := range []struct {
		policy corev1.DNSPolicy
		config *corev1.PodDNSConfig
		want   string
	}{
		{corev1.DNSDefault, nil, node},
		// No cluster DNS: ClusterFirst falls back to the node's resolvers.
		{corev1.DNSClusterFirst, nil, node},
		{corev1.DNSNone, &corev1.PodDNSConfig{
			Nameservers: []string{"192.0.2.99"},
			Searches:    []string{"a.example", "b.example"},
			Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: &three}, {Name: "edns0"}},
		}, "search a.example b.example\nnameserver 192.0.2.99\noptions ndots:3 edns0\n"},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			pod := newPod("dns-"+strings.ToLower(string(tc.policy)), "cat", "/etc/resolv.conf", "print", "--", "cat", "/etc/hosts")
			pod.Spec.DNSPolicy, pod.Spec.DNSConfig = tc.policy, tc.config
			sb, _, out := e.runToEnd(t, pod, scriptDone)
			resolv, hosts, _ := strings.Cut(out, "--\n")
			if resolv != tc.want {
				t.Errorf("/etc/resolv.conf:\n%s\nwant:\n%s", resolv, tc.want)
			}
			if !slices.Contains(strings.Split(hosts, "\n"), sb.IP+"\t"+pod.Name) {
				t.Errorf("/etc/hosts lacks %q:\n%s", sb.IP+"\t"+pod.Name, hosts)
			}
		})
	}
}

func TestOOMScoreAdjPerQOSClass(t *testing.T) {
	e := newTestEnv(t)
	memCapacity, err := memTotal("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	// kubelet's Burstable score: 1000 minus the request's share of the
	// node's memory in thousandths, within [3, 999].
	burstable := resource.NewQuantity(memCapacity/3, resource.BinarySI)
	burstableScore := min(max(1000-1000*burstable.Value()/memCapacity, 3), 999)
	// Without CAP_SYS_RESOURCE (a sandboxed CI) no score may go below our own.
	floor, err := minOOMScoreAdj()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		res  corev1.ResourceRequirements
		want int64
	}{
		{"besteffort", corev1.ResourceRequirements{}, 1000},
		{"burstable", corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: *burstable}}, burstableScore},
		{"guaranteed", corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("100m"),
		}}, max(-997, int64(floor))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := newPod("oom-"+tc.name, "sleep")
			pod.Spec.Containers[0].Resources = tc.res
			_, id := e.run(t, pod)
			st, err := e.rt.ContainerStatus(context.Background(), id)
			if err != nil || st.PID == 0 {
				t.Fatalf("status %+v, %v", st, err)
			}
			got := readFirst(t, fmt.Sprintf("/proc/%d/oom_score_adj", st.PID))
			if got != strconv.FormatInt(tc.want, 10) {
				t.Errorf("oom_score_adj = %s, want %d", got, tc.want)
			}
		})
	}
}

// dockerArchiveFiles lists the file names of a tar.
func dockerArchiveFiles(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

func TestImportDockerArchive(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	const ref = "registry.daemonlet.test/docker-archive:v2"
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := testimage.BuildDockerArchive(ctx, path, ref); err != nil {
		t.Fatal(err)
	}
	// An OCI layout would be imported too: make sure this is docker's format.
	if files := dockerArchiveFiles(t, path); !slices.Contains(files, "manifest.json") || slices.Contains(files, "index.json") {
		t.Fatalf("not a docker archive: %v", files)
	}
	names, err := e.rt.ImportImage(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{ref}) {
		t.Errorf("imported %v, want [%s]", names, ref)
	}
	pod := newPod("docker-archive", "print", "from-docker-archive")
	pod.Spec.Containers[0].Image = ref
	_, st, out := e.runToEnd(t, pod, scriptDone)
	if st.ExitCode != 0 || !strings.Contains(out, "from-docker-archive\n") {
		t.Errorf("exit %d:\n%s", st.ExitCode, out)
	}
}

func TestCPURequestInCgroup(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("cpureq", "sleep")
	pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}
	_, id := e.run(t, pod)
	st, err := e.rt.ContainerStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	cg := st.Labels[labelCgroupPath]
	if cg == "" {
		t.Fatal("no cgroup path recorded")
	}
	// 500m is 512 shares (1024 a CPU); runc maps shares to a v2 weight.
	const shares = 512
	if cgroup2() {
		want := 1 + (shares-2)*9999/262142
		if got := readFirst(t, filepath.Join("/sys/fs/cgroup", cg, "cpu.weight")); got != strconv.Itoa(want) {
			t.Errorf("cpu.weight = %s, want %d", got, want)
		}
		return
	}
	if got := readFirst(t, filepath.Join("/sys/fs/cgroup/cpu", cg, "cpu.shares")); got != strconv.Itoa(shares) {
		t.Errorf("cpu.shares = %s, want %d", got, shares)
	}
}

func TestSysctlInPodNetworkNamespace(t *testing.T) {
	e := newTestEnv(t)
	const path = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	hostBefore := readFirst(t, path)
	// A non-root server on port 80 only works with the sysctl applied.
	pod := newPod("sysctl", "cat", path, "serve-http", "80")
	uid := int64(1000)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: &uid,
		Sysctls:   []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}},
	}
	sb, _ := e.run(t, pod)
	out := e.logOf(t, pod, "main", "serve-http on", "testimage: serve-http: ")
	if !slices.Contains(strings.Split(out, "\n"), "0") {
		t.Errorf("%s in the pod is not 0:\n%s", path, out)
	}
	httpOK(t, "http://"+net.JoinHostPort(sb.IP, "80")+"/")
	if after := readFirst(t, path); after != hostBefore {
		t.Errorf("the host's %s changed from %s to %s", path, hostBefore, after)
	}
}
