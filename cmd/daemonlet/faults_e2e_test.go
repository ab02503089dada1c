package main

// Fault tests of the agent (issue 9): containerd restarted under it, a
// network cut between it and the server, a reboot with the server gone.
// Each ends with the node-wide invariants of invariants.converged: exactly
// the desired pods run, once each, and nothing of any other pod is left in
// containerd, on the host or in the agent's directories.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/moby/sys/mountinfo"
	bolt "go.etcd.io/bbolt"
)

// invariants checks one node against the DaemonSets it should run, and
// remembers every pod UID the node ever reported, so that a pod that went
// away can be looked for everywhere it could have left something.
type invariants struct {
	n    *node
	seen map[string]bool
	// iptablesSave lists the NAT rules of the network namespace the
	// agent's CNI plugins work in.
	iptablesSave []string
}

func newInvariants(n *node) *invariants {
	return &invariants{n: n, seen: map[string]bool{}, iptablesSave: []string{"iptables-save", "-t", "nat"}}
}

// converged returns nil once the node runs exactly one running, ready pod
// of each DaemonSet of want (name → revision, "" for any), none of any
// other, and nothing is left of a pod it no longer runs; else what differs.
func (v *invariants) converged(want map[string]string) error {
	pods, err := v.n.pods()
	if err != nil {
		return err
	}
	var errs []error
	desired := map[string]bool{}
	perDS := map[string]int{}
	for _, p := range pods {
		v.seen[p.UID] = true
		perDS[p.DaemonSet]++
		rev, ok := want[p.DaemonSet]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("pod %s (%s) is not desired", p.Name, p.State))
		case rev != "" && p.Revision != rev:
			errs = append(errs, fmt.Errorf("pod %s runs revision %s, want %s", p.Name, p.Revision, rev))
		case !running(p, true):
			errs = append(errs, fmt.Errorf("pod %s is %s/%s %s %s", p.Name, p.Phase, p.State, p.Reason, p.Message))
		}
		if ok {
			desired[p.UID] = true
		}
	}
	for ds := range want {
		if perDS[ds] != 1 {
			errs = append(errs, fmt.Errorf("DaemonSet %s has %d pods, want 1", ds, perDS[ds]))
		}
	}
	// Leftovers too, even before the pods are right: when the node never
	// converges, they often say why.
	return errors.Join(append(errs, v.leaks(desired))...)
}

// leaks returns everything on the node that belongs to no desired pod:
// containers, tasks, active snapshots, sandboxes (with their network
// namespaces), mounts, CNI IP allocations, log directories and links, and
// NAT rules naming a pod that went away.
func (v *invariants) leaks(desired map[string]bool) error {
	n := v.n
	ctx := context.Background()
	var errs []error
	leak := func(format string, args ...any) { errs = append(errs, fmt.Errorf("leak: "+format, args...)) }

	rt, err := n.runtime()
	if err != nil {
		return err
	}
	defer rt.Close()
	conts, err := rt.ListContainers(ctx)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	perPod := map[string]int{}
	for _, c := range conts {
		ids[c.ID] = true
		if !desired[c.PodUID] {
			leak("container %s of pod %s (%s)", c.ID, c.PodName, c.State)
			continue
		}
		if c.State == runtime.StateRunning {
			perPod[c.PodUID]++
		}
	}
	for uid := range desired {
		if perPod[uid] != 1 {
			errs = append(errs, fmt.Errorf("pod %s has %d running containers, want 1", uid, perPod[uid]))
		}
	}
	sandboxes, err := rt.ListSandboxes(ctx)
	if err != nil {
		return err
	}
	for _, uid := range sandboxes {
		if !desired[uid] {
			leak("sandbox of pod %s", uid)
		}
	}

	errs = append(errs, v.containerdLeaks(ids)...)
	errs = append(errs, v.hostLeaks(desired, ids)...)
	return errors.Join(errs...)
}

// containerdLeaks checks tasks and snapshots against the containers.
func (v *invariants) containerdLeaks(ids map[string]bool) []error {
	n := v.n
	var errs []error
	cl, err := client.New(n.ctd.Address)
	if err != nil {
		return []error{err}
	}
	defer cl.Close()
	ctx := namespaces.WithNamespace(context.Background(), n.namespace)
	tasks, err := cl.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return []error{err}
	}
	// The runtime keeps a dead container's stopped task (its exit status
	// lives there); a task of no container is a leak.
	for _, tk := range tasks.Tasks {
		if !ids[tk.ID] {
			errs = append(errs, fmt.Errorf("leak: task %s (pid %d, %s) of no container", tk.ID, tk.Pid, tk.Status))
		}
	}
	cs, err := cl.Containers(ctx)
	if err != nil {
		return []error{err}
	}
	keys := map[string]bool{}
	snapshotters := []string{"overlayfs"}
	for _, c := range cs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			return []error{err}
		}
		keys[info.SnapshotKey] = true
		if !slices.Contains(snapshotters, info.Snapshotter) {
			snapshotters = append(snapshotters, info.Snapshotter)
		}
	}
	for _, sn := range snapshotters {
		// Committed snapshots are image layers; an active one is a
		// container's writable layer, or one that a killed agent's lease
		// still keeps (a day, containerd's crash-safety default): a
		// leftover, such as the unpack of an agent killed mid-import,
		// which its successor releases at start.
		err := cl.SnapshotService(sn).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted && !keys[info.Name] {
				errs = append(errs, fmt.Errorf("leak: %s snapshot %s (%v) of no container", sn, info.Name, info.Kind))
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// hostLeaks checks mounts, IP allocations, log directories and links and
// NAT rules.
func (v *invariants) hostLeaks(desired, ids map[string]bool) []error {
	n := v.n
	var errs []error
	leak := func(format string, args ...any) { errs = append(errs, fmt.Errorf("leak: "+format, args...)) }
	podsDir := filepath.Join(n.root, "pods")
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(n.root))
	if err != nil {
		return []error{err}
	}
	for _, m := range mounts {
		rel, err := filepath.Rel(podsDir, m.Mountpoint)
		if err != nil || strings.HasPrefix(rel, "..") || !desired[strings.Split(rel, string(filepath.Separator))[0]] {
			leak("mount %s (%s)", m.Mountpoint, m.FSType)
		}
	}
	bundles := filepath.Join(n.ctd.State, "io.containerd.runtime.v2.task", n.namespace)
	if mounts, err = mountinfo.GetMounts(mountinfo.PrefixFilter(bundles)); err != nil {
		return []error{err}
	}
	for _, m := range mounts {
		if rel, _ := filepath.Rel(bundles, m.Mountpoint); !ids[strings.Split(rel, string(filepath.Separator))[0]] {
			leak("rootfs mount %s", m.Mountpoint)
		}
	}

	// host-local keeps one file per allocated IP, named by the IP and
	// holding the CNI container ID (the pod's sandbox).
	ipam := filepath.Join(n.dir, "ipam", "e2e")
	entries, _ := os.ReadDir(ipam)
	allocated := 0
	for _, e := range entries {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
			continue
		}
		allocated++
		b, _ := os.ReadFile(filepath.Join(ipam, e.Name()))
		if uid := v.goneUID(string(b), desired); uid != "" {
			leak("IP %s of pod %s", e.Name(), uid)
		}
	}
	if allocated != len(desired) {
		leak("%d IPs allocated for %d pods", allocated, len(desired))
	}

	podLogs, _ := os.ReadDir(filepath.Join(n.dir, "pod-logs"))
	for _, e := range podLogs {
		parts := strings.Split(e.Name(), "_")
		if !desired[parts[len(parts)-1]] {
			leak("pod log directory %s", e.Name())
		}
	}
	links, _ := os.ReadDir(filepath.Join(n.dir, "container-logs"))
	for _, e := range links {
		name := e.Name()
		p := filepath.Join(n.dir, "container-logs", name)
		if _, err := os.Stat(p); err != nil {
			leak("dangling log link %s: %v", name, err)
			continue
		}
		if !logLinkOf(name, ids) {
			leak("log link %s of no container", name)
		}
	}

	out, err := exec.Command(v.iptablesSave[0], v.iptablesSave[1:]...).Output()
	if err != nil {
		return append(errs, fmt.Errorf("%s: %w", strings.Join(v.iptablesSave, " "), err))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if uid := v.goneUID(line, desired); uid != "" {
			leak("NAT rule of pod %s: %s", uid, line)
		}
	}
	return errs
}

// logLinkOf says whether a container log link, named
// <pod>_<namespace>_<container>-<container ID>.log as kubelet names it,
// belongs to one of the containers.
func logLinkOf(name string, ids map[string]bool) bool {
	for id := range ids {
		if strings.HasSuffix(name, "-"+id+".log") {
			return true
		}
	}
	return false
}

// goneUID returns the UID of a pod the node once ran, but no longer
// should, that text names; "" if none.
func (v *invariants) goneUID(text string, desired map[string]bool) string {
	for uid := range v.seen {
		if !desired[uid] && strings.Contains(text, uid) {
			return uid
		}
	}
	return ""
}

// checkStateDB opens the agent's bbolt file read-only, as it is after the
// agent was killed, and runs bbolt's consistency check on it.
func checkStateDB(t *testing.T, n *node) {
	t.Helper()
	path := filepath.Join(n.root, "state.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("bbolt check of %s: %v", path, err)
	}
}

// revisionOf is the revision the agent gives the pod of a DaemonSet
// manifest: the hash of its defaulted template.
func revisionOf(t *testing.T, manifest string) string {
	t.Helper()
	objs, err := api.DecodeAndValidate("test", []byte(manifest))
	if err != nil || len(objs) != 1 || objs[0].DaemonSet == nil {
		t.Fatalf("manifest: %v (%d objects)\n%s", err, len(objs), manifest)
	}
	return api.TemplateHash(&objs[0].DaemonSet.Spec.Template, nil)
}

// soakDS is a DaemonSet of the sleeping test image; gen changes its
// template, so each generation is a new revision.
func soakDS(name string, gen int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: %[1]s, namespace: default}
spec:
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: registry.daemonlet.test/testimage:v1
        args: [sleep]
        env: [{name: GENERATION, value: "%[2]d"}]
`, name, gen)
}

// assertUntouched fails for any pod of before that no longer runs the same
// container with the same PID.
func assertUntouched(t *testing.T, when string, before, after map[string]runtime.Container) {
	t.Helper()
	for pod, c := range before {
		assertSame(t, when+": pod "+pod, c, after[pod])
	}
}

// TestFaultContainerdRestart restarts containerd under a running agent:
// the shims keep the containers, so the pods keep running untouched, and
// the agent, reconnected, acts on a new DaemonSet.
func TestFaultContainerdRestart(t *testing.T) {
	n := newNode(t, "nodeLabels: {disk: ssd}\n")
	n.manifest("selected.yaml", selectedDS)
	n.manifest("plain.yaml", plainDS)
	n.start()
	inv := newInvariants(n)
	want := map[string]string{"selected": "", "plain": ""}
	waitUntil(t, 90*time.Second, "both pods to run", func() error { return inv.converged(want) })
	before := n.runningByPod()

	if err := n.ctd.Restart(); err != nil {
		t.Fatal(err)
	}
	third := soakDS("third", 1)
	n.manifest("third.yaml", third)
	want["third"] = revisionOf(t, third)
	waitUntil(t, 90*time.Second, "the new DaemonSet after containerd's restart", func() error { return inv.converged(want) })
	assertUntouched(t, "after containerd's restart", before, n.runningByPod())

	// The agent still hears of exits: its event stream came back with
	// containerd. The container is the test's own pod's.
	victim := before["plain-e2e-node"]
	if err := syscall.Kill(int(victim.PID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n.waitPods(60*time.Second, "plain to be restarted after its exit", func(p map[string]agent.PodStatus) bool {
		return running(p["plain"], true) && p["plain"].Restarts == 1
	})
	if err := inv.converged(want); err != nil {
		t.Error(err)
	}
	if b, _ := os.ReadFile(n.logFile); bytes.Contains(b, []byte("panic")) {
		t.Errorf("the agent panicked:\n%s", b)
	}
}

// netnsLab is a network namespace made by the test with a veth pair to the
// host: the host side holds hostIP, the namespace side nsIP.
type netnsLab struct {
	name, hostIP, nsIP, hostLink string
}

// newNetnsLab makes the namespace and its link; cleanup deletes both
// (deleting the namespace deletes its veth end, and with it the pair).
func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	ctdtest.RequireRoot(t)
	for _, tool := range []string{"ip", "iptables", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			ctdtest.Unavailable(t, "%s not installed (scripts/deps.sh installs it): %v", tool, err)
		}
	}
	tok := token()
	third := int(tok[1])%200 + 20
	l := &netnsLab{
		name:     "dlcut-" + tok,
		hostLink: "dlcut" + tok,
		hostIP:   fmt.Sprintf("10.250.%d.1", third),
		nsIP:     fmt.Sprintf("10.250.%d.2", third),
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", l.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", l.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", l.name, err, out)
		}
	})
	run("ip", "link", "add", l.hostLink, "type", "veth", "peer", "name", "eth0", "netns", l.name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", l.hostLink).Run() })
	run("ip", "addr", "add", l.hostIP+"/30", "dev", l.hostLink)
	run("ip", "link", "set", l.hostLink, "up")
	run("ip", "netns", "exec", l.name, "ip", "addr", "add", l.nsIP+"/30", "dev", "eth0")
	run("ip", "netns", "exec", l.name, "ip", "link", "set", "eth0", "up")
	run("ip", "netns", "exec", l.name, "ip", "link", "set", "lo", "up")
	return l
}

// cut blocks TCP between the namespace and the host side's port, as a
// firewall dropping the traffic would: nothing answers, nothing resets.
// The returned func lifts the cut; cleanup lifts it too if the test did
// not.
func (l *netnsLab) cut(t *testing.T, port string) func() {
	t.Helper()
	// Both ways: with OUTPUT alone, what the server sends on an
	// established connection (watch events) would still arrive.
	rules := [][]string{
		{"OUTPUT", "-d", l.hostIP, "-p", "tcp", "--dport", port, "-j", "DROP"},
		{"INPUT", "-s", l.hostIP, "-p", "tcp", "--sport", port, "-j", "DROP"},
	}
	ipt := func(op string) error {
		var errs []error
		for _, rule := range rules {
			args := append([]string{"netns", "exec", l.name, "iptables", "-w", op}, rule...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables %s %v: %w: %s", op, rule, err, out))
			}
		}
		return errors.Join(errs...)
	}
	if err := ipt("-A"); err != nil {
		t.Fatal(err)
	}
	lifted := false
	lift := func() {
		if lifted {
			return
		}
		lifted = true
		if err := ipt("-D"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(lift)
	return lift
}

// inNetns makes the node's agent run in the lab's network namespace (only
// that one: nsenter --net keeps the mount namespace, so the agent's pod
// mounts and containerd's socket are the host's), serving its status on
// the namespace's address.
func (l *netnsLab) inNetns(t *testing.T, n *node) {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "daemonlet-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=/run/netns/%s -- %s \"$@\"\n", l.name, n.bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	n.bin = wrapper
	n.addr = fmt.Sprintf("%s:%d", l.nsIP, freePort(t))
	n.metricsAddr = fmt.Sprintf("%s:%d", l.nsIP, freePort(t))
}

// serverSource returns the server source as the agent's /sources
// reports it: whether it delivered a set since the agent started, and its
// error ("" when none).
func serverSource(n *node) (synced bool, msg string, err error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + n.addr + agent.PathSources)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	var infos []agent.SourceInfo
	if err := json.NewDecoder(resp.Body).Decode(&infos); err != nil {
		return false, "", fmt.Errorf("GET %s: %s: %w", agent.PathSources, resp.Status, err)
	}
	for _, s := range infos {
		if s.Name == agent.SourceServer {
			return s.Synced, s.Error + s.AgentError, nil
		}
	}
	return false, "", fmt.Errorf("no server source in %+v", infos)
}

// TestFaultNetworkCut runs the agent in a network namespace of its own and
// drops its traffic to the server for a while: the pods keep running, the
// server marks the node NotReady, a DaemonSet applied during the cut is
// not seen until the cut ends, and then the node resyncs: Ready again and
// the new pod running.
func TestFaultNetworkCut(t *testing.T) {
	lab := newNetnsLab(t)
	s := newServer(t, "cut-node")
	_, port, _ := strings.Cut(s.addr, ":")
	s.addr = lab.hostIP + ":" + port
	s.extraArgs = []string{"--node-monitor-grace-period", "5s", "--insecure-allow-plain-http-on-public-address"}
	s.start()

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(nodeToken("cut-node")), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "", "--server", s.url(), "--token-file", tokenFile, "--node-status-update-frequency", "1s")
	n.name = "cut-node"
	lab.inNetns(t, n)
	inv := newInvariants(n)
	inv.iptablesSave = []string{"ip", "netns", "exec", lab.name, "iptables-save", "-t", "nat"}
	n.start()
	// The agent removes its pods itself, from inside its namespace, where
	// its CNI plugins made their links and rules; the node's own cleanup,
	// in the host's namespace, could not. This runs after the cut is
	// lifted and before the node's cleanup.
	dss := []string{"first", "second"}
	removePods := func() error {
		for _, ds := range dss {
			if out, err := s.cli("delete", "ds", ds, "-n", "default", "--ignore-not-found"); err != nil {
				return fmt.Errorf("delete %s: %w\n%s", ds, err, out)
			}
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := inv.converged(map[string]string{})
			if err == nil || time.Now().After(deadline) {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Cleanup(func() {
		if pods, err := n.pods(); err == nil && len(pods) == 0 {
			return
		}
		if err := removePods(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	applyDS(t, s, soakDS("first", 1))
	s.waitDS("default", "first", 1, 1, 1)
	want := map[string]string{"first": ""}
	waitUntil(t, 60*time.Second, "the first pod", func() error { return inv.converged(want) })
	before := n.runningByPod()

	lift := lab.cut(t, port)
	waitUntil(t, 30*time.Second, "the server to mark the node NotReady", func() error { return nodeReady(s, "cut-node", "NotReady") })
	second := soakDS("second", 1)
	applyDS(t, s, second)
	time.Sleep(3 * time.Second) // room for the change to arrive, which it must not
	if pods, err := n.pods(); err != nil || slices.ContainsFunc(pods, func(p agent.PodStatus) bool { return p.DaemonSet == "second" }) {
		t.Fatalf("during the cut: pods %+v (%v), want no pod of second", pods, err)
	}
	assertUntouched(t, "during the cut", before, n.runningByPod())

	lift()
	waitUntil(t, 3*time.Minute, "the node to be Ready again", func() error { return nodeReady(s, "cut-node", "Ready") })
	want["second"] = revisionOf(t, second)
	waitUntil(t, 3*time.Minute, "the DaemonSet applied during the cut", func() error { return inv.converged(want) })
	s.waitDS("default", "second", 1, 1, 1)
	assertUntouched(t, "after the cut", before, n.runningByPod())

	if err := removePods(); err != nil {
		t.Fatalf("removing the DaemonSets: %v", err)
	}
}

// applyDS applies one DaemonSet manifest through the CLI.
func applyDS(t *testing.T, s *serverProc, manifest string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ds.yaml")
	if err := os.WriteFile(p, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", p); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
}

// nodeReady returns nil when `get nodes` shows the node with the given
// STATUS.
func nodeReady(s *serverProc, name, status string) error {
	out, err := s.cli("get", "nodes")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == name {
			if f[1] == status {
				return nil
			}
			return fmt.Errorf("node %s is %s, want %s", name, f[1], status)
		}
	}
	return fmt.Errorf("no node %s in:\n%s", name, out)
}

// runningFirst starts a server and an agent of it on node name, applies
// the DaemonSet "first" and waits until the node runs exactly its pod;
// want is that desired state, for invariants.converged.
func runningFirst(t *testing.T, name string) (*serverProc, *node, *invariants, map[string]string) {
	t.Helper()
	s := newServer(t, name)
	s.start()
	n := fleetNode(t, s, name)
	inv := newInvariants(n)
	first := soakDS("first", 1)
	applyDS(t, s, first)
	want := map[string]string{"first": revisionOf(t, first)}
	waitUntil(t, 90*time.Second, "the first pod", func() error { return inv.converged(want) })
	return s, n, inv, want
}

// TestFaultRebootWithoutServer reboots the node with the server gone:
// containerd loses its tasks and state, the agent starts with no reachable
// source and brings the pods back from bbolt; when the server returns the
// node resyncs and picks up a DaemonSet applied since.
func TestFaultRebootWithoutServer(t *testing.T) {
	s, n, inv, want := runningFirst(t, "reboot-node")
	before := n.runningByPod()["first-reboot-node"]

	n.kill9()
	checkStateDB(t, n)
	s.stop(syscall.SIGKILL)
	n.reboot(before.PodUID)

	n.start()
	waitUntil(t, 90*time.Second, "the pod to come back from bbolt", func() error { return inv.converged(want) })
	after := n.runningByPod()["first-reboot-node"]
	if after.PID == 0 || after.PID == before.PID || after.PodUID != before.PodUID {
		t.Errorf("pod after the reboot: %+v (before %+v)", after, before)
	}
	// The agent has not heard from the server since it started, and says
	// so. (It reports no error: the server source holds its errors back
	// until the node object has synced, which it cannot without the
	// server.)
	if synced, msg, err := serverSource(n); err != nil || synced {
		t.Errorf("the server source with the server gone: synced %v, error %q (%v)", synced, msg, err)
	}

	s.start()
	second := soakDS("second", 1)
	applyDS(t, s, second)
	want["second"] = revisionOf(t, second)
	waitUntil(t, 90*time.Second, "the node to resync with the server", func() error { return inv.converged(want) })
	s.waitDS("default", "first", 1, 1, 1)
	assertSame(t, "after the server returned", after, n.runningByPod()["first-reboot-node"])
}
