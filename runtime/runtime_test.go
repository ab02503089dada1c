package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// deleteLink removes a test's own bridge.
func deleteLink(name string) {
	_ = exec.Command("ip", "link", "del", name).Run()
}

func TestMemoryLimitInCgroup(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("memlimit", "sleep")
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("64Mi"),
			corev1.ResourceCPU:    resource.MustParse("250m"),
		},
	}
	_, id := e.run(t, pod)
	st, err := e.rt.ContainerStatus(context.Background(), id)
	if err != nil || st.State != StateRunning {
		t.Fatalf("status %+v, %v", st, err)
	}
	cg := st.Labels[labelCgroupPath]
	if cg == "" {
		t.Fatal("no cgroup path recorded")
	}
	// cgroup v2 first, then v1's memory and cpu controllers.
	mem := readFirst(t, filepath.Join("/sys/fs/cgroup", cg, "memory.max"), filepath.Join("/sys/fs/cgroup/memory", cg, "memory.limit_in_bytes"))
	if mem != strconv.Itoa(64<<20) {
		t.Errorf("memory limit = %s, want %d", mem, 64<<20)
	}
	cpu := readFirst(t, filepath.Join("/sys/fs/cgroup", cg, "cpu.max"), filepath.Join("/sys/fs/cgroup/cpu", cg, "cpu.cfs_quota_us"))
	if !strings.HasPrefix(cpu, "25000") {
		t.Errorf("cpu quota = %q, want 25000", cpu)
	}
}

func readFirst(t *testing.T, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("none of %v readable", paths)
	return ""
}

func TestHostPathWrite(t *testing.T) {
	e := newTestEnv(t)
	hostDir := t.TempDir()
	pod := newPod("hostpath", "write-file", "/data/out.txt", "hello-from-pod", "sleep")
	dirType := corev1.HostPathDirectory
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirType}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	e.run(t, pod)
	waitFor(t, 20*time.Second, "file written by the container", func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(hostDir, "out.txt"))
		return string(b) == "hello-from-pod", err
	})
}

func TestEnvAndFieldRefs(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("envpod", "print-env", "sleep")
	c := &pod.Spec.Containers[0]
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	c.Env = []corev1.EnvVar{
		{Name: "PLAIN", Value: "plain-value"},
		{Name: "EXPANDED", Value: "$(PLAIN)-more"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "POD_UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "SA", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
		{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
	}
	sb, _ := e.run(t, pod)
	log := e.readLog(t, pod, "main", 0, "MEM_LIMIT=")
	for _, want := range []string{
		"PLAIN=plain-value", "EXPANDED=plain-value-more", "POD_NAME=envpod", "POD_NAMESPACE=default",
		"POD_UID=" + pod.UID, "NODE_NAME=node-1", "SA=default", "HOST_IP=127.0.0.1",
		"POD_IP=" + sb.IP, "MEM_LIMIT=128",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestPodIPAndHostPort(t *testing.T) {
	e := newTestEnv(t)
	hostPort := freePort(t)
	pod := newPod("web", "serve-http", "8080")
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: int32(hostPort), Protocol: corev1.ProtocolTCP}}
	sb, _ := e.run(t, pod)
	_, cidr, _ := net.ParseCIDR(e.podCIDR)
	if ip := net.ParseIP(sb.IP); ip == nil || !cidr.Contains(ip) {
		t.Fatalf("pod IP %q not in %s", sb.IP, e.podCIDR)
	}
	httpOK(t, "http://"+net.JoinHostPort(sb.IP, "8080")+"/")
	httpOK(t, fmt.Sprintf("http://127.0.0.1:%d/", hostPort))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpOK(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, 20*time.Second, "GET "+url, func() (bool, error) {
		resp, err := c.Get(url)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), "ok"), fmt.Errorf("status %d", resp.StatusCode)
	})
}

func TestGracePeriodThenKill(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("stubborn", "ignore-sigterm", "sleep")
	_, id := e.run(t, pod)
	e.readLog(t, pod, "main", 0, "sleep")
	const grace = 3 * time.Second
	start := time.Now()
	if err := e.rt.StopContainer(context.Background(), id, grace); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st, err := e.rt.ContainerStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateExited || st.ExitCode != 137 {
		t.Errorf("status %v exit %d, want Exited 137 (SIGKILL)", st.State, st.ExitCode)
	}
	if took < grace {
		t.Errorf("killed after %v, before the grace period %v", took, grace)
	}
}

func TestSIGTERMStopsPolitely(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("polite", "sleep")
	_, id := e.run(t, pod)
	e.readLog(t, pod, "main", 0, "sleep")
	if err := e.rt.StopContainer(context.Background(), id, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := e.rt.ContainerStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateExited || st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("status %v exit %d reason %s, want Exited 0 Completed", st.State, st.ExitCode, st.Reason)
	}
}

func TestOOMKilled(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("oom", "alloc-mem", "200")
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	_, id := e.run(t, pod)
	st := e.waitExited(t, id, 30*time.Second)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("exit %d reason %q, want 137 OOMKilled", st.ExitCode, st.Reason)
	}
}

var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) (F|P) (.*)$`)

func TestCRILogFormat(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("logger", "print", "to-stdout", "eprint", "to-stderr", "exit", "3")
	_, id := e.run(t, pod)
	st := e.waitExited(t, id, 20*time.Second)
	if st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("exit %d reason %q, want 3 Error", st.ExitCode, st.Reason)
	}
	text := e.readLog(t, pod, "main", 0, "to-stderr")
	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a CRI log line: %q", line)
		}
		seen[m[4]] = m[2]
	}
	if seen["to-stdout"] != "stdout" || seen["to-stderr"] != "stderr" {
		t.Errorf("streams %v", seen)
	}
	// The /var/log/containers link points at the file.
	link := filepath.Join(e.cfg.ContainerLogDir, fmt.Sprintf("logger_default_main-%s.log", id))
	if target, err := os.Readlink(link); err != nil || !strings.HasSuffix(target, "/main/0.log") {
		t.Errorf("link %s -> %q, %v", link, target, err)
	}
}

func TestExecAndPreStop(t *testing.T) {
	e := newTestEnv(t)
	hostDir := t.TempDir()
	pod := newPod("hooks", "sleep")
	pod.Spec.Volumes = []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}}
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "d", MountPath: "/d"}}
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{"/testimage", "write-file", "/d/prestop", "ran"}}}}
	_, id := e.run(t, pod)
	code, out, err := e.rt.Exec(context.Background(), id, []string{"/testimage", "print", "exec-output", "exit", "4"})
	if err != nil || code != 4 || !strings.Contains(string(out), "exec-output") {
		t.Fatalf("exec: code %d out %q err %v", code, out, err)
	}
	if err := e.rt.StopContainer(context.Background(), id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(hostDir, "prestop")); err != nil || string(b) != "ran" {
		t.Errorf("preStop hook did not run: %q %v", b, err)
	}
}

func TestListCarriesIdentity(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("listed", "sleep")
	_, id := e.run(t, pod)
	conts, err := e.rt.ListContainers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(conts) != 1 {
		t.Fatalf("listed %d containers, want 1", len(conts))
	}
	c := conts[0]
	if c.ID != id || c.PodUID != pod.UID || c.PodName != "listed" || c.Namespace != "default" ||
		c.Name != "main" || c.Revision != "rev1" || c.Attempt != 0 || c.Init || c.SpecHash == "" ||
		c.State != StateRunning || c.PID == 0 {
		t.Errorf("listed %+v", c)
	}
}

// TestRemoveLeavesNothing checks every kind of leftover after a pod with a
// network, a hostPort and a memory emptyDir is removed.
func TestRemoveLeavesNothing(t *testing.T) {
	e := newTestEnv(t)
	pod := newPod("tidy", "sleep")
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	sb, id := e.run(t, pod)
	ctx := context.Background()
	e.remove(t, pod, id)
	// Removing twice is fine.
	if err := e.rt.RemoveContainer(ctx, id); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if err := e.rt.RemoveSandbox(ctx, pod.UID); err != nil {
		t.Errorf("second sandbox remove: %v", err)
	}
	e.assertNoTrace(t, pod, sb, id)
}

// assertNoTrace fails for any container, task, snapshot, mount, pod
// directory, IP allocation or log link the pod left behind.
func (e *testEnv) assertNoTrace(t *testing.T, pod *Pod, sb *Sandbox, ids ...string) {
	t.Helper()
	ctx := e.rt.ctx(context.Background())
	conts, err := e.raw.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(conts) != 0 {
		t.Errorf("%d containers left", len(conts))
	}
	tasks, err := e.raw.TaskService().List(ctx, nil)
	if err == nil && len(tasks.Tasks) != 0 {
		t.Errorf("%d tasks left", len(tasks.Tasks))
	}
	for _, id := range ids {
		if _, err := e.raw.SnapshotService("").Stat(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("snapshot %s left (%v)", id, err)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if sb != nil && strings.Contains(string(mounts), sb.Dir) {
		t.Errorf("mounts under %s left", sb.Dir)
	}
	if sb != nil {
		if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
			t.Errorf("pod dir %s left", sb.Dir)
		}
		if sb.IP != "" {
			if out, _ := exec.Command("grep", "-rl", pod.UID, e.cfg.RootDir).CombinedOutput(); len(out) > 0 {
				t.Errorf("files naming the pod left (IP allocations?): %s", out)
			}
		}
	}
	if _, err := os.Stat(e.rt.PodLogDir(pod)); !os.IsNotExist(err) {
		t.Errorf("pod log dir left")
	}
	links, _ := os.ReadDir(e.cfg.ContainerLogDir)
	if len(links) != 0 {
		t.Errorf("%d log links left", len(links))
	}
}

func TestBadInputLeavesNothing(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	t.Run("missing image", func(t *testing.T) {
		_, err := e.rt.EnsureImage(ctx, "registry.daemonlet.test/nothing:v9", corev1.PullNever)
		if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "nothing:v9") {
			t.Errorf("err = %v, want NotFound naming the image", err)
		}
		pod := newPod("noimage", "sleep")
		pod.Spec.Containers[0].Image = "registry.daemonlet.test/nothing:v9"
		sb, err := e.rt.RunSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
		if !errdefs.IsNotFound(err) {
			t.Errorf("create err = %v, want NotFound", err)
		}
		if err := e.rt.RemoveSandbox(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertNoTrace(t, pod, sb, ContainerID(pod.UID, "main", 0))
	})
	t.Run("malformed reference", func(t *testing.T) {
		_, err := e.rt.EnsureImage(ctx, "Bad//Ref::x", corev1.PullIfNotPresent)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "Bad//Ref::x") {
			t.Errorf("err = %v, want InvalidArgument naming the reference", err)
		}
	})
	t.Run("hostPath type mismatch", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		pod := newPod("badhostpath", "sleep")
		dirType := corev1.HostPathDirectory
		pod.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: file, Type: &dirType}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
		sb, err := e.rt.RunSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
		if err == nil || !strings.Contains(err.Error(), "hostPath") || !strings.Contains(err.Error(), file) {
			t.Errorf("err = %v, want an error naming hostPath and %s", err, file)
		}
		if err := e.rt.RemoveSandbox(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertNoTrace(t, pod, sb, ContainerID(pod.UID, "main", 0))
	})
	t.Run("unknown volume type", func(t *testing.T) {
		pod := newPod("nfs", "sleep")
		pod.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "127.0.0.1", Path: "/x"}}}}
		errs := CheckPodSpec(pod.Spec)
		if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), "volumes[0].nfs") {
			t.Errorf("CheckPodSpec = %v, want an error naming volumes[0].nfs", errs)
		}
	})
}
