package runtime

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// sandboxEnv is a sandbox manager with a CNI network of its own: its own
// configuration, cache and IPAM directories, bridge and pod CIDR.
type sandboxEnv struct {
	s      *sandboxes
	dir    string
	cidr   *net.IPNet
	bridge string
	tok    string
	uids   []string // of the pods made by pod, for scrubbing leftovers
}

func newSandboxEnv(t *testing.T) *sandboxEnv {
	t.Helper()
	ctdtest.RequireRoot(t)
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			ctdtest.Unavailable(t, "CNI plugin %s missing (install containernetworking-plugins)", p)
		}
	}
	for _, bin := range []string{"iptables", "iptables-save", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			ctdtest.Unavailable(t, "%s missing", bin)
		}
	}
	tok := randomToken(3)
	dir := t.TempDir()
	cidr := fmt.Sprintf("10.231.%d.0/24", int(tok[0])*7%250+2)
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	env := &sandboxEnv{dir: dir, cidr: ipnet, bridge: "dlt" + tok, tok: tok}
	cfg := CNIConfig{
		ConfDir:    filepath.Join(dir, "cni-conf"),
		BinDirs:    []string{"/usr/lib/cni"},
		CacheDir:   filepath.Join(dir, "cni-cache"),
		PodCIDR:    cidr,
		BridgeName: env.bridge,
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	env.s, err = newSandboxes(filepath.Join(dir, "root", "pods"), "127.0.0.1", cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	env.s.nodeResolvConf = filepath.Join(dir, "node-resolv.conf")
	if err := os.WriteFile(env.s.nodeResolvConf, []byte("nameserver 192.0.2.53\nsearch node.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env.s.nodeHosts = filepath.Join(dir, "node-hosts")
	if err := os.WriteFile(env.s.nodeHosts, []byte("127.0.0.1 localhost\n192.0.2.10 node-1.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		uids, _ := env.s.list()
		for _, uid := range uids {
			if err := env.s.remove(context.Background(), uid); err != nil {
				t.Errorf("cleanup sandbox %s: %v", uid, err)
			}
		}
		env.scrubNATRules(t)
		// The bridge is this test's own (its name carries the token).
		_ = exec.Command("ip", "link", "del", env.bridge).Run()
	})
	return env
}

// ipamDir is host-local's allocation directory of the default network.
func (e *sandboxEnv) ipamDir() string {
	return filepath.Join(e.dir, "root", "cni", "host-local", defaultNetworkName)
}

// scrubNATRules deletes the NAT rules and chains that CNI plugins made for
// this test's pods, should a failing teardown have left any; the shared
// CNI-HOSTPORT-* chains stay.
func (e *sandboxEnv) scrubNATRules(t *testing.T) {
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		rule, ok := strings.CutPrefix(line, "-A ")
		if !ok || !slices.ContainsFunc(e.uids, func(uid string) bool { return strings.Contains(line, `id: \"`+uid+`\"`) }) {
			continue
		}
		// iptables-save quotes for a shell-like parser.
		if out, err := exec.Command("sh", "-c", "iptables -t nat -D "+rule).CombinedOutput(); err != nil {
			t.Errorf("scrub rule %s: %v: %s", rule, err, out)
		}
		if _, target, ok := strings.Cut(rule, " -j "); ok && strings.HasPrefix(target, "CNI-") && !strings.HasPrefix(target, "CNI-HOSTPORT-") {
			chains = append(chains, strings.Fields(target)[0])
		}
	}
	for _, c := range chains {
		_ = exec.Command("iptables", "-t", "nat", "-F", c).Run()
		_ = exec.Command("iptables", "-t", "nat", "-X", c).Run()
	}
}

// pod is a pod with a hostPort, a disk and a memory emptyDir.
func (e *sandboxEnv) pod(name string, hostPort int32) *Pod {
	uid := "uid-" + name + "-" + randomToken(4)
	e.uids = append(e.uids, uid)
	return &Pod{
		UID:       uid,
		Name:      name,
		Namespace: "default",
		Spec: &corev1.PodSpec{
			DNSPolicy: corev1.DNSClusterFirst,
			Containers: []corev1.Container{{
				Name:  "main",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080, HostPort: hostPort, Protocol: corev1.ProtocolTCP}},
			}},
			Volumes: []corev1.Volume{
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
					Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(16<<20, resource.BinarySI),
				}}},
			},
		},
	}
}

// unusedPort returns a TCP port free on 127.0.0.1 right now.
func unusedPort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// inNamespace runs fn on a thread that joined the namespace file at path;
// the thread is thrown away afterwards (it stays locked).
func inNamespace(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, 0); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// servePod listens on ip:port inside the pod's network namespace and greets
// every connection until the test ends.
func servePod(t *testing.T, netns, addr, greeting string) {
	t.Helper()
	var l net.Listener
	err := inNamespace(netns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen in the pod: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, greeting)
			c.Close()
		}
	}()
}

// greeting dials addr from the host and returns the first line it sends.
func greeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// mountAt returns the mount whose mount point is path, or nil.
func mountAt(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

// assertGone fails for anything the pod's sandbox left on the host.
func (e *sandboxEnv) assertGone(t *testing.T, sb *Sandbox) {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(sb.Dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Errorf("mount left: %s (%s)", m.Mountpoint, m.FSType)
	}
	if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
		t.Errorf("pod dir %s left (%v)", sb.Dir, err)
	}
	if _, err := e.s.get(sb.PodUID); !errdefs.IsNotFound(err) {
		t.Errorf("get after remove: %v, want NotFound", err)
	}
	entries, _ := os.ReadDir(e.ipamDir())
	for _, ent := range entries {
		data, _ := os.ReadFile(filepath.Join(e.ipamDir(), ent.Name()))
		if ent.Name() == sb.IP || strings.Contains(string(data), sb.PodUID) {
			t.Errorf("IP allocation left: %s", ent.Name())
		}
	}
	cache, _ := exec.Command("grep", "-rl", sb.PodUID, filepath.Join(e.dir, "cni-cache")).Output()
	if len(cache) > 0 {
		t.Errorf("CNI cache entries left: %s", cache)
	}
	rules, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, rules)
	}
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.Contains(line, sb.PodUID) || (sb.NetNSPath != "" && strings.Contains(line, sb.IP+"/32")) {
			t.Errorf("iptables rule left: %s", line)
		}
	}
	if ports, _ := os.ReadDir(filepath.Join("/sys/class/net", e.bridge, "brif")); len(ports) != 0 {
		t.Errorf("%d veths left on bridge %s", len(ports), e.bridge)
	}
}

func TestSandboxLifecycle(t *testing.T) {
	e := newSandboxEnv(t)
	ctx := context.Background()
	hostPort := unusedPort(t)
	pod := e.pod("sandbox-web", hostPort)
	sb, err := e.s.ensure(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}

	for kind, p := range map[string]string{"net": sb.NetNSPath, "ipc": sb.IPCNSPath, "uts": sb.UTSNSPath} {
		if m := mountAt(t, p); p == "" || m == nil || m.FSType != "nsfs" {
			t.Errorf("%s namespace %q is not an nsfs mount (%+v)", kind, p, m)
		}
	}
	var uts unix.Utsname
	if err := inNamespace(sb.UTSNSPath, func() error { return unix.Uname(&uts) }); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(uts.Nodename[:]); got != pod.Name {
		t.Errorf("hostname in the pod = %q, want %q", got, pod.Name)
	}
	ip := net.ParseIP(sb.IP)
	if ip == nil || !e.cidr.Contains(ip) {
		t.Fatalf("pod IP %q not in %s", sb.IP, e.cidr)
	}
	if sb.HostIP != "127.0.0.1" {
		t.Errorf("host IP %q", sb.HostIP)
	}

	files := map[string]string{
		sb.HostnamePath():   pod.Name + "\n",
		sb.ResolvConfPath(): "search node.example\nnameserver 192.0.2.53\n",
	}
	for path, want := range files {
		if got, err := os.ReadFile(path); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	if hosts, err := os.ReadFile(sb.HostsPath()); err != nil || !strings.Contains(string(hosts), sb.IP+"\t"+pod.Name+"\n") {
		t.Errorf("hosts = %q, %v; want the pod's entry", hosts, err)
	}
	if st, err := os.Stat(sb.EmptyDirPath("cache")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o777 {
		t.Errorf("emptyDir cache: %v, %v; want a 0777 directory", st, err)
	}
	if m := mountAt(t, sb.EmptyDirPath("mem")); m == nil || m.FSType != "tmpfs" || !strings.Contains(m.VFSOptions, "size=16384k") {
		t.Errorf("emptyDir mem mount %+v, want a 16Mi tmpfs", m)
	}

	servePod(t, sb.NetNSPath, net.JoinHostPort(sb.IP, "8080"), "hello from the pod")
	if got, err := greeting(net.JoinHostPort(sb.IP, "8080")); err != nil || got != "hello from the pod" {
		t.Errorf("pod IP: %q, %v", got, err)
	}
	if got, err := greeting(fmt.Sprintf("127.0.0.1:%d", hostPort)); err != nil || got != "hello from the pod" {
		t.Errorf("hostPort on 127.0.0.1:%d: %q, %v", hostPort, got, err)
	}

	again, err := e.s.ensure(ctx, pod)
	if err != nil || !reflect.DeepEqual(again, sb) {
		t.Errorf("second ensure = %+v, %v; want %+v", again, err, sb)
	}
	if got, err := e.s.get(pod.UID); err != nil || !reflect.DeepEqual(got, sb) {
		t.Errorf("get = %+v, %v", got, err)
	}
	if uids, err := e.s.list(); err != nil || !slices.Equal(uids, []string{pod.UID}) {
		t.Errorf("list = %q, %v", uids, err)
	}

	if err := e.s.remove(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, sb)
	if err := e.s.remove(ctx, pod.UID); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := e.s.get(pod.UID); !errdefs.IsNotFound(err) {
		t.Errorf("get of a removed sandbox: %v, want NotFound", err)
	}
	if _, err := e.s.ensure(ctx, &Pod{UID: "../x", Spec: &corev1.PodSpec{}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ensure with UID ../x: %v, want InvalidArgument", err)
	}
}

func TestSandboxCrashRecovery(t *testing.T) {
	e := newSandboxEnv(t)
	ctx := context.Background()

	t.Run("remove without a record", func(t *testing.T) {
		pod := e.pod("crash-remove", unusedPort(t))
		sb, err := e.s.ensure(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		// A crash before the record was written: namespaces, CNI
		// attachment and files exist, sandbox.json does not.
		if err := os.Remove(filepath.Join(sb.Dir, sandboxRecordFile)); err != nil {
			t.Fatal(err)
		}
		if uids, _ := e.s.list(); !slices.Contains(uids, pod.UID) {
			t.Errorf("list = %q, want the half-made sandbox", uids)
		}
		if err := e.s.remove(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertGone(t, sb)
	})

	t.Run("remove without a CNI cache", func(t *testing.T) {
		pod := e.pod("crash-nocache", unusedPort(t))
		sb, err := e.s.ensure(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		// A crash after the plugins ran but before libcni cached the
		// result: only the intent knows the attachment.
		if err := os.RemoveAll(filepath.Join(e.dir, "cni-cache")); err != nil {
			t.Fatal(err)
		}
		if err := e.s.remove(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertGone(t, sb)
	})

	t.Run("ensure redoes a half-made sandbox", func(t *testing.T) {
		pod := e.pod("crash-redo", unusedPort(t))
		first, err := e.s.ensure(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(first.Dir, sandboxRecordFile)); err != nil {
			t.Fatal(err)
		}
		sb, err := e.s.ensure(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		if m := mountAt(t, sb.NetNSPath); m == nil || m.FSType != "nsfs" {
			t.Errorf("net namespace after redo: %+v", m)
		}
		var allocs []string
		entries, _ := os.ReadDir(e.ipamDir())
		for _, ent := range entries {
			if data, _ := os.ReadFile(filepath.Join(e.ipamDir(), ent.Name())); strings.Contains(string(data), pod.UID) {
				allocs = append(allocs, ent.Name())
			}
		}
		if !slices.Equal(allocs, []string{sb.IP}) {
			t.Errorf("IP allocations of the pod %q, want only %s", allocs, sb.IP)
		}
		servePod(t, sb.NetNSPath, net.JoinHostPort(sb.IP, "8080"), "redone")
		if got, err := greeting(net.JoinHostPort(sb.IP, "8080")); err != nil || got != "redone" {
			t.Errorf("pod IP after redo: %q, %v", got, err)
		}
		if err := e.s.remove(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertGone(t, sb)
	})

	// What a reboot leaves: the record, with namespace files and tmpfs
	// directories no longer mounted.
	for _, gone := range []string{"uts namespace", "memory emptyDir"} {
		t.Run("ensure recreates after the "+gone+" vanished", func(t *testing.T) {
			pod := e.pod("crash-reboot", unusedPort(t))
			first, err := e.s.ensure(ctx, pod)
			if err != nil {
				t.Fatal(err)
			}
			path := first.UTSNSPath
			if gone == "memory emptyDir" {
				path = first.EmptyDirPath("mem")
			}
			if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
			sb, err := e.s.ensure(ctx, pod)
			if err != nil {
				t.Fatal(err)
			}
			if m := mountAt(t, path); m == nil {
				t.Errorf("%s not mounted again", path)
			}
			if sb.IP == first.IP {
				t.Errorf("IP %s kept, want a new sandbox", sb.IP)
			}
			if err := e.s.remove(ctx, pod.UID); err != nil {
				t.Fatal(err)
			}
			e.assertGone(t, sb)
		})
	}
}

func TestSandboxHostNetwork(t *testing.T) {
	e := newSandboxEnv(t)
	ctx := context.Background()
	pod := &Pod{
		UID: "uid-hostnet-" + e.tok, Name: "hostnet", Namespace: "kube-system",
		Spec: &corev1.PodSpec{HostNetwork: true, HostIPC: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet},
	}
	sb, err := e.s.ensure(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if sb.NetNSPath != "" || sb.UTSNSPath != "" || sb.IPCNSPath != "" {
		t.Errorf("namespaces %q %q %q, want the host's", sb.NetNSPath, sb.UTSNSPath, sb.IPCNSPath)
	}
	if sb.IP != "127.0.0.1" {
		t.Errorf("IP %q, want the host IP", sb.IP)
	}
	node, _ := os.Hostname()
	if got, _ := os.ReadFile(sb.HostnamePath()); string(got) != node+"\n" {
		t.Errorf("hostname file %q, want the node's %q", got, node)
	}
	want := "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.10 node-1.example\n"
	if got, _ := os.ReadFile(sb.HostsPath()); string(got) != want {
		t.Errorf("hosts %q, want %q", got, want)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "cni-cache", "results")); len(entries) != 0 {
		t.Errorf("CNI was called for a hostNetwork pod: %d cache entries", len(entries))
	}
	if err := e.s.remove(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, sb)
}

// TestSandboxObjectVolumes checks the directories the agent fills from
// ConfigMaps and Secrets: a plain directory for a ConfigMap, a tmpfs for a
// Secret and for a projected volume with a Secret source, so that Secrets
// never reach the disk; removal unmounts them.
func TestSandboxObjectVolumes(t *testing.T) {
	e := newSandboxEnv(t)
	ctx := context.Background()
	pod := &Pod{
		UID: "uid-objvol-" + e.tok, Name: "objvol", Namespace: "default",
		Spec: &corev1.PodSpec{HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet, Volumes: []corev1.Volume{
			{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
			{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "mixed", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
			}}}},
		}},
	}
	sb, err := e.s.ensure(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if sb.VolumePath("conf") != sb.EmptyDirPath("conf") {
		t.Errorf("VolumePath %s differs from EmptyDirPath %s", sb.VolumePath("conf"), sb.EmptyDirPath("conf"))
	}
	if st, err := os.Stat(sb.VolumePath("conf")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o755 || mountAt(t, sb.VolumePath("conf")) != nil {
		t.Errorf("configMap volume: %v, %v; want a plain 0755 directory", st, err)
	}
	for _, name := range []string{"creds", "mixed"} {
		if m := mountAt(t, sb.VolumePath(name)); m == nil || m.FSType != "tmpfs" {
			t.Errorf("volume %s mount %+v, want a tmpfs", name, m)
		}
		if st, err := os.Stat(sb.VolumePath(name)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("volume %s: %v, %v; want mode 0755", name, st, err)
		}
	}
	if err := e.s.remove(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, sb)
}

func TestSandboxFailedCNIAddLeavesNothing(t *testing.T) {
	e := newSandboxEnv(t)
	ctx := context.Background()
	// A plugin chained after bridge that refuses ADD: bridge has already
	// allocated an address and set up masquerading, which libcni has not
	// cached, so only the recorded intent can release them.
	bin := filepath.Join(e.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","code":999,"msg":"refused by the test"}'; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}';;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(bin, "refuse"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e.s.net.cni.Path = append([]string{bin}, e.s.net.cni.Path...)
	conf := filepath.Join(e.s.net.confDir, defaultConflistName)
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.Replace(string(data), `"type": "portmap"`, `"type": "refuse"`, 1))
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		t.Fatal(err)
	}

	pod := e.pod("refused", unusedPort(t))
	_, err = e.s.ensure(ctx, pod)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("ensure = %v, want Unavailable with the plugin's message", err)
	}
	e.assertGone(t, &Sandbox{PodUID: pod.UID, Dir: filepath.Join(e.s.root, pod.UID)})
}
