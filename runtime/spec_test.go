package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// testHost pins the machine facts buildSpecOpts depends on.
var testHost = hostInfo{
	node:           nodeCapacity{MilliCPU: 4000, Memory: 8 << 30, EphemeralStorage: 100 << 30},
	hostname:       "node-host",
	minOOMScoreAdj: -1000,
}

// specFixture is a pod with one container, a sandbox directory holding
// hosts, hostname and resolv.conf files, and a rootfs with /etc/passwd and
// /etc/group for user resolution.
type specFixture struct {
	in     SpecInput
	rootfs string
}

func newSpecFixture(t *testing.T) *specFixture {
	t.Helper()
	dir := t.TempDir()
	sb := &Sandbox{
		PodUID: "uid-1", Dir: filepath.Join(dir, "pod"),
		NetNSPath: "/run/netns/p1", IPCNSPath: "/run/ipcns/p1", UTSNSPath: "/run/utsns/p1",
		IP: "10.88.0.5", HostIP: "192.0.2.10",
	}
	for _, f := range []string{sb.HostsPath(), sb.HostnamePath(), sb.ResolvConfPath()} {
		writeFile(t, f, "x\n")
	}
	rootfs := filepath.Join(dir, "rootfs")
	writeFile(t, filepath.Join(rootfs, "etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
	writeFile(t, filepath.Join(rootfs, "etc/group"), "root:x:0:\napp:x:1001:\nextra:x:3000:app\n")
	pod := &Pod{
		UID: "uid-1", Name: "agent-x7k2p", Namespace: "kube-system", NodeName: "node-1",
		Labels:      map[string]string{"app": "agent"},
		Annotations: map[string]string{"note": "hi"},
		Spec: &corev1.PodSpec{
			ServiceAccountName: "agent-sa",
			Containers:         []corev1.Container{{Name: "main", Image: "img"}},
		},
	}
	return &specFixture{
		in: SpecInput{
			Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[0], ID: "cid-1",
			Image:      ocispec.ImageConfig{Entrypoint: []string{"/bin/agent"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/usr/bin:/bin", "IMG=1"}},
			SeccompDir: filepath.Join(dir, "seccomp"),
		},
		rootfs: rootfs,
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// spec builds the options and applies them to containerd's default spec,
// as client.WithNewSpec does, with the fixture's rootfs for user lookups.
func (f *specFixture) spec(t *testing.T) (*oci.Spec, error) {
	t.Helper()
	opts, err := buildSpecOpts(f.in, testHost)
	if err != nil {
		return nil, err
	}
	return f.generate(opts)
}

// generate applies opts to containerd's default spec.
func (f *specFixture) generate(opts []oci.SpecOpts) (*oci.Spec, error) {
	ctx := namespaces.WithNamespace(context.Background(), "test")
	opts = append([]oci.SpecOpts{oci.WithRootFSPath(f.rootfs)}, opts...)
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: f.in.ID}, opts...)
}

// apply is generate that fails the test on error.
func (f *specFixture) apply(t *testing.T, opts []oci.SpecOpts) *oci.Spec {
	t.Helper()
	s, err := f.generate(opts)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	return s
}

func (f *specFixture) mustSpec(t *testing.T) *oci.Spec {
	t.Helper()
	s, err := f.spec(t)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	return s
}

func TestSpecDefaults(t *testing.T) {
	f := newSpecFixture(t)
	s := f.mustSpec(t)

	if got, want := s.Process.Args, []string{"/bin/agent", "--serve"}; !slices.Equal(got, want) {
		t.Errorf("args = %q, want %q", got, want)
	}
	if got, want := s.Process.Env, []string{"PATH=/usr/bin:/bin", "HOSTNAME=agent-x7k2p", "IMG=1"}; !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}
	if s.Hostname != "agent-x7k2p" {
		t.Errorf("hostname = %q", s.Hostname)
	}
	if s.Process.User.UID != 0 || s.Process.User.GID != 0 {
		t.Errorf("user = %+v, want root", s.Process.User)
	}
	if s.Process.NoNewPrivileges {
		t.Error("noNewPrivileges set without allowPrivilegeEscalation: false")
	}
	if s.Process.Rlimits != nil || s.Linux.Seccomp != nil || s.Process.ApparmorProfile != "" {
		t.Errorf("default rlimits/seccomp/apparmor kept: %v %v %q", s.Process.Rlimits, s.Linux.Seccomp, s.Process.ApparmorProfile)
	}
	if !slices.Equal(s.Linux.MaskedPaths, kubeletMaskedPaths) || !slices.Equal(s.Linux.ReadonlyPaths, kubeletReadonlyPaths) {
		t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.CgroupsPath != "/daemonlet/poduid-1/cid-1" {
		t.Errorf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != 1000 {
		t.Errorf("oom_score_adj = %v, want 1000 (BestEffort)", s.Process.OOMScoreAdj)
	}
	wantNS := map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: "/run/netns/p1", specs.IPCNamespace: "/run/ipcns/p1",
		specs.UTSNamespace: "/run/utsns/p1", specs.PIDNamespace: "", specs.MountNamespace: "",
	}
	if got := nsMap(s); !mapsEqual(got, wantNS) {
		t.Errorf("namespaces = %v, want %v", got, wantNS)
	}
	for _, m := range s.Mounts {
		if m.Destination == "/run" {
			t.Error("containerd's /run tmpfs kept")
		}
	}
	for _, want := range []specs.Mount{
		{Destination: "/etc/hosts", Source: f.in.Sandbox.HostsPath(), Type: "bind", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/hostname", Source: f.in.Sandbox.HostnamePath(), Type: "bind", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/resolv.conf", Source: f.in.Sandbox.ResolvConfPath(), Type: "bind", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/sys/fs/cgroup", Source: "cgroup", Type: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	} {
		if m := findMount(s, want.Destination); m == nil || m.Source != want.Source || m.Type != want.Type || !slices.Equal(m.Options, want.Options) {
			t.Errorf("mount %s = %+v, want %+v", want.Destination, m, want)
		}
	}
}

func nsMap(s *oci.Spec) map[specs.LinuxNamespaceType]string {
	m := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		m[ns.Type] = ns.Path
	}
	return m
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func findMount(s *oci.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestSpecHostNamespaces(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Sandbox.NetNSPath, f.in.Sandbox.IPCNSPath, f.in.Sandbox.UTSNSPath = "", "", ""
	f.in.Pod.Spec.HostNetwork, f.in.Pod.Spec.HostIPC, f.in.Pod.Spec.HostPID = true, true, true
	s := f.mustSpec(t)
	if got := nsMap(s); !mapsEqual(got, map[specs.LinuxNamespaceType]string{specs.MountNamespace: ""}) {
		t.Errorf("namespaces = %v, want only a mount namespace", got)
	}
	if s.Hostname != "" {
		t.Errorf("hostname %q set in the host's UTS namespace", s.Hostname)
	}
	if !slices.Contains(s.Process.Env, "HOSTNAME=node-host") {
		t.Errorf("env %q lacks the node's HOSTNAME", s.Process.Env)
	}
	if m := findMount(s, "/dev/shm"); m == nil || m.Source != "/dev/shm" || m.Type != "bind" {
		t.Errorf("/dev/shm = %+v, want the host's with hostIPC", m)
	}
}

func TestSpecHostnameTruncated(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Pod.Name = strings.Repeat("a", 62) + "-bcd"
	if got := f.mustSpec(t).Hostname; got != strings.Repeat("a", 62) {
		t.Errorf("hostname = %q, want 62 a's without the trailing '-'", got)
	}
	f.in.Pod.Spec.Hostname = "custom"
	if got := f.mustSpec(t).Hostname; got != "custom" {
		t.Errorf("hostname = %q, want spec.hostname", got)
	}
}

func TestSpecWorkingDirAndReadOnlyRoot(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Image.WorkingDir = "/img"
	if got := f.mustSpec(t).Process.Cwd; got != "/img" {
		t.Errorf("cwd = %q, want the image's", got)
	}
	yes := true
	f.in.Container.WorkingDir = "/work"
	f.in.Container.SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes}
	s := f.mustSpec(t)
	if s.Process.Cwd != "/work" {
		t.Errorf("cwd = %q, want the container's", s.Process.Cwd)
	}
	if !s.Root.Readonly {
		t.Error("rootfs not read-only")
	}
	if m := findMount(s, "/etc/resolv.conf"); m == nil || !slices.Contains(m.Options, "ro") {
		t.Errorf("resolv.conf %+v not read-only on a read-only rootfs", m)
	}
	if m := findMount(s, "/etc/hosts"); m == nil || !slices.Contains(m.Options, "rw") {
		t.Errorf("hosts %+v not read-write (kubelet keeps it writable)", m)
	}
}

func TestSpecOptsRejectsIncompleteInput(t *testing.T) {
	_, err := SpecOpts(SpecInput{})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("err = %v, want InvalidArgument", err)
	}
}

func TestSpecOptsOnHost(t *testing.T) {
	// SpecOpts reads the real machine; the numbers must be sane.
	f := newSpecFixture(t)
	f.in.Container.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Mi")}
	opts, err := SpecOpts(f.in)
	if err != nil {
		t.Fatal(err)
	}
	s := f.apply(t, opts)
	if adj := *s.Process.OOMScoreAdj; adj < 3 || adj > 999 {
		t.Errorf("burstable oom_score_adj = %d, want within [3, 999]", adj)
	}
}

func TestContainerSpecHash(t *testing.T) {
	a := corev1.Container{Name: "main", Image: "img:1", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}
	b := *a.DeepCopy()
	if ContainerSpecHash(&a) != ContainerSpecHash(&b) {
		t.Error("equal containers hash differently")
	}
	b.Env[0].Value = "2"
	if ContainerSpecHash(&a) == ContainerSpecHash(&b) {
		t.Error("changed env does not change the hash")
	}
	c := *a.DeepCopy()
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
	if ContainerSpecHash(&a) == ContainerSpecHash(&c) {
		t.Error("changed limits do not change the hash")
	}
	if h := ContainerSpecHash(&a); len(h) != 16 {
		t.Errorf("hash %q, want 16 hex digits", h)
	}
}

// errIs asserts that err is of the errdefs class and mentions every want.
func errIs(t *testing.T, err error, class error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v mentioning %q", class, want)
	}
	if !errors.Is(err, class) {
		t.Errorf("err = %v, want class %v", err, class)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want it to mention %q", err, w)
		}
	}
}

// TestCreatedSpecHash: a container whose env the agent resolved from a
// ConfigMap is labelled with the template container's hash, so that the
// agent does not see a changed spec; a container the pod lacks hashes itself.
func TestCreatedSpecHash(t *testing.T) {
	tmpl := corev1.Container{Name: "main", Image: "img", Env: []corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}, Key: "a"}}}}}
	resolved := corev1.Container{Name: "main", Image: "img", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}
	pod := &Pod{Spec: &corev1.PodSpec{InitContainers: []corev1.Container{{Name: "init", Image: "img"}}, Containers: []corev1.Container{tmpl}}}
	if got, want := CreatedSpecHash(pod, &resolved), ContainerSpecHash(&tmpl); got != want {
		t.Errorf("CreatedSpecHash = %s, want the template's %s", got, want)
	}
	other := corev1.Container{Name: "other", Image: "img"}
	if got, want := CreatedSpecHash(pod, &other), ContainerSpecHash(&other); got != want {
		t.Errorf("CreatedSpecHash of a container outside the spec = %s, want its own %s", got, want)
	}
}
