package agent

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/api/server"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// serverRig is a real server (real bbolt store, httptest on a fixed
// 127.0.0.1 port that a restart reopens) and an agent wired to it as
// `daemonlet agent --server` wires it, on a fake runtime and a real agent
// store.
type serverRig struct {
	t      *testing.T
	dir    string
	addr   string
	cstore *cluster.Bolt
	srv    *httptest.Server
	// stopControllers ends the server's background loops (status, node
	// monitor) before its store is closed.
	stopControllers func()
	c               *client.Client
	rt              *runtimetest.Fake
	db              *store.DB
	a               *Agent
	reporter        *PodReporter
	cancel          context.CancelFunc
	done            chan struct{}
}

func newServerRig(t *testing.T) *serverRig {
	t.Helper()
	r := &serverRig{t: t, dir: t.TempDir(), rt: runtimetest.New(clock.RealClock{})}
	r.rt.AddImage("img")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.startServer(ln)
	t.Cleanup(r.stopServer)
	db, err := store.Open(filepath.Join(r.dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.db = db
	t.Cleanup(func() { db.Close() })
	r.c, err = client.New(client.Config{Servers: []string{"http://" + r.addr}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startServer serves the cluster store in r.dir on ln.
func (r *serverRig) startServer(ln net.Listener) {
	r.t.Helper()
	st, err := cluster.OpenBolt(filepath.Join(r.dir, "cluster.db"), cluster.BoltOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	h, err := server.New(server.Config{Store: st})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	r.stopControllers = func() { cancel(); <-done }
	r.cstore = st
	r.srv = httptest.NewUnstartedServer(h.Handler())
	r.srv.Listener.Close()
	r.srv.Listener = ln
	r.srv.Start()
}

// stopServer closes the server and its store, as a server going away.
func (r *serverRig) stopServer() {
	if r.srv == nil {
		return
	}
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.stopControllers()
	r.cstore.Close()
	r.srv = nil
}

// restartServer serves the same store again on the same address.
func (r *serverRig) restartServer() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.startServer(ln)
}

// startAgent runs an agent with the server source, the node sync and the
// pod reporter; node carries the settings' labels and taints.
func (r *serverRig) startAgent(node *corev1.Node) {
	r.t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{r.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(Config{NodeName: testNode, Node: node, Runtime: r.rt, Store: r.db, Logger: logger})
	if err != nil {
		r.t.Fatal(err)
	}
	var src *ServerSource
	ns, err := NewNodeSync(NodeSyncConfig{
		Client: r.c, Node: node, HostIP: "127.0.0.1", SetNode: a.SetNode,
		SetRevisions: func(revs api.NodeRevisions) { src.SetNodeRevisions(revs) },
		Frequency:    100 * time.Millisecond, KubeletVersion: "daemonlet/test",
		ContainerRuntimeVersion: "containerd://test", Logger: logger,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	rep := NewPodReporter(PodReporterConfig{Client: r.c, Agent: a, HostIP: "127.0.0.1", NodeUID: ns.UID, Interval: 50 * time.Millisecond, Logger: logger})
	src = NewServerSource(ServerSourceConfig{Client: r.c, NodeName: testNode, NodeSynced: ns.Synced(), PodDeleted: rep.PodDeleted, Logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	r.a, r.reporter, r.cancel, r.done = a, rep, cancel, make(chan struct{})
	updates := make(chan SourceUpdate)
	loops := []func(){
		func() { src.Run(ctx, updates) },
		func() { ns.Run(ctx) },
		func() { rep.Run(ctx) },
		func() {
			if err := a.Run(ctx, updates, []string{SourceServer}); err != nil {
				r.t.Errorf("agent Run: %v", err)
			}
		},
	}
	finished := make(chan struct{}, len(loops))
	for _, f := range loops {
		go func() { f(); finished <- struct{}{} }()
	}
	go func() {
		for range loops {
			<-finished
		}
		close(r.done)
	}()
	r.t.Cleanup(r.stopAgent)
}

// stopAgent stops the agent and its loops; containers keep running.
func (r *serverRig) stopAgent() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.t.Fatal("agent loops did not stop")
	}
}

func (r *serverRig) pod(name, what string, cond func(PodStatus) bool) PodStatus {
	r.t.Helper()
	var found PodStatus
	waitFor(r.t, name+" "+what, func() bool {
		for _, p := range r.a.Pods() {
			if p.Name == name && cond(p) {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

func (r *serverRig) noPod(name string) {
	r.t.Helper()
	waitFor(r.t, name+" gone", func() bool {
		for _, p := range r.a.Pods() {
			if p.Name == name {
				return false
			}
		}
		return true
	})
}

// serverPod waits for the pod object to satisfy cond.
func (r *serverRig) serverPod(name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	r.t.Helper()
	var found *corev1.Pod
	waitFor(r.t, "server pod "+name+" "+what, func() bool {
		p, err := r.c.Pods("default").Get(context.Background(), name)
		if err == nil && cond(p) {
			found = p
			return true
		}
		return false
	})
	return found
}

func (r *serverRig) createDS(ds *appsv1.DaemonSet) *appsv1.DaemonSet {
	r.t.Helper()
	ds = ds.DeepCopy()
	ds.UID = ""
	out, err := r.c.DaemonSets(ds.Namespace).Create(context.Background(), ds, client.WriteOptions{})
	if err != nil {
		r.t.Fatalf("create DaemonSet %s: %v", ds.Name, err)
	}
	return out
}

func webDaemonSet(name string) *appsv1.DaemonSet {
	ds := daemonSet(name, ctr("app", "img"))
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"role": "web"}
	return ds
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestServerDrivesTheAgent(t *testing.T) {
	r := newServerRig(t)
	taint := corev1.Taint{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}
	r.startAgent(api.NewNode(testNode, map[string]string{"role": "web"}, []corev1.Taint{taint}))
	ctx := context.Background()

	// The node registers with the settings' labels and taints.
	var node *corev1.Node
	waitFor(t, "node registered", func() bool {
		var err error
		node, err = r.c.Nodes().Get(ctx, testNode)
		return err == nil
	})
	if node.Labels["role"] != "web" || node.Labels[api.LabelHostname] != testNode {
		t.Errorf("node labels = %v, want role=web and the hostname label", node.Labels)
	}
	if len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Key != "dedicated" {
		t.Errorf("node taints = %v, want the registered taint", node.Spec.Taints)
	}

	// A DaemonSet applied on the server starts a pod through the agent.
	ds := webDaemonSet("web")
	ds.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
	created := r.createDS(ds)
	ps := r.pod("web-node1", "running", isRunning)
	obj := r.serverPod("web-node1", "ready", podReady)
	if string(obj.UID) != ps.UID {
		t.Errorf("server pod uid = %s, want the agent's %s", obj.UID, ps.UID)
	}
	if ref := metav1.GetControllerOf(obj); ref == nil || ref.UID != created.UID || ref.Kind != "DaemonSet" {
		t.Errorf("server pod controller = %+v, want DaemonSet %s", ref, created.UID)
	}
	if obj.Labels["app"] != "web" || obj.Labels[api.LabelControllerRevisionHash] != ps.Revision {
		t.Errorf("server pod labels = %v, want app=web and the revision %s", obj.Labels, ps.Revision)
	}
	if obj.Annotations[AnnotationDaemonSet] != "web" || obj.Spec.NodeName != testNode {
		t.Errorf("server pod annotations %v, nodeName %q", obj.Annotations, obj.Spec.NodeName)
	}
	if obj.Status.Phase != corev1.PodRunning || len(obj.Status.ContainerStatuses) != 1 ||
		obj.Status.ContainerStatuses[0].RestartCount != 0 || obj.Status.ContainerStatuses[0].State.Running == nil ||
		obj.Status.PodIP == "" || obj.Status.HostIP != "127.0.0.1" || obj.Status.StartTime == nil {
		t.Errorf("server pod status = %+v", obj.Status)
	}

	// Heartbeats reach the server.
	first := readyHeartbeat(t, r.c)
	waitFor(t, "a later heartbeat", func() bool { return readyHeartbeat(t, r.c).After(first) })

	// A label removed on the server stops the pod at once; put back, it
	// starts it again.
	setRole := func(v string) {
		t.Helper()
		n, err := r.c.Nodes().Get(ctx, testNode)
		if err != nil {
			t.Fatal(err)
		}
		if v == "" {
			delete(n.Labels, "role")
		} else {
			n.Labels["role"] = v
		}
		if _, err := r.c.Nodes().Update(ctx, n, client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setRole("")
	r.noPod("web-node1")
	waitFor(t, "server pod deleted", func() bool {
		_, err := r.c.Pods("default").Get(ctx, "web-node1")
		return err != nil
	})
	setRole("web")
	ps = r.pod("web-node1", "running again", isRunning)

	// An admin deleting the pod object makes the agent restart the pod.
	before := r.rt.Events()
	r.serverPod("web-node1", "reported", podReady)
	if err := r.c.Pods("default").Delete(ctx, "web-node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod stopped and started again", func() bool {
		return countPrefix(r.rt.Events()[len(before):], "stop") > 0 && podIsRunning(r.a, "web-node1")
	})
	r.serverPod("web-node1", "recreated", podReady)
	_ = ps
}

// readyHeartbeat is the node's Ready condition heartbeat on the server.
func readyHeartbeat(t *testing.T, c *client.Client) time.Time {
	t.Helper()
	n, err := c.Nodes().Get(context.Background(), testNode)
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return cond.LastHeartbeatTime.Time
		}
	}
	t.Fatalf("node has no Ready=True condition: %+v", n.Status.Conditions)
	return time.Time{}
}

func podIsRunning(a *Agent, name string) bool {
	for _, p := range a.Pods() {
		if p.Name == name && isRunning(p) {
			return true
		}
	}
	return false
}

func countPrefix(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if len(e) >= len(prefix) && e[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func TestServerAwayKeepsPodsAndResyncs(t *testing.T) {
	r := newServerRig(t)
	node := api.NewNode(testNode, map[string]string{"role": "web"}, nil)
	r.startAgent(node)
	r.createDS(webDaemonSet("web"))
	ps := r.pod("web-node1", "running", isRunning)
	r.serverPod("web-node1", "ready", podReady)

	r.stopServer()
	waitFor(t, "the source reports the server away", func() bool {
		for _, s := range r.a.Sources() {
			if s.Name == SourceServer && s.Err != nil {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	if got := r.pod("web-node1", "still running", isRunning); got.UID != ps.UID {
		t.Errorf("pod uid changed while the server was away: %s, was %s", got.UID, ps.UID)
	}

	// An agent restarted while the server is away runs its last-known set.
	r.stopAgent()
	r.startAgent(node)
	time.Sleep(500 * time.Millisecond)
	if got := r.pod("web-node1", "running after an agent restart", isRunning); got.UID != ps.UID {
		t.Errorf("pod uid changed across the restart: %s, was %s", got.UID, ps.UID)
	}

	// A server back on the same store: the agent resyncs and takes new
	// DaemonSets.
	r.restartServer()
	r.createDS(webDaemonSet("web2"))
	r.pod("web2-node1", "running", isRunning)
	r.serverPod("web2-node1", "ready", podReady)
	waitFor(t, "the source works again", func() bool {
		for _, s := range r.a.Sources() {
			if s.Name == SourceServer && s.Err == nil {
				return true
			}
		}
		return false
	})
	if got := r.pod("web-node1", "still running", isRunning); got.UID != ps.UID {
		t.Errorf("pod uid changed after the resync: %s, was %s", got.UID, ps.UID)
	}
}

func TestOrphanKeepsRunningAndIsAdopted(t *testing.T) {
	r := newServerRig(t)
	r.startAgent(api.NewNode(testNode, map[string]string{"role": "web"}, nil))
	ctx := context.Background()
	r.createDS(webDaemonSet("web"))
	ps := r.pod("web-node1", "running", isRunning)
	r.serverPod("web-node1", "owned", func(p *corev1.Pod) bool { return podReady(p) && metav1.GetControllerOf(p) != nil })
	ctrs := r.rt.Events()

	orphan := metav1.DeletePropagationOrphan
	if err := r.c.DaemonSets("default").Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	r.serverPod("web-node1", "orphaned", func(p *corev1.Pod) bool { return metav1.GetControllerOf(p) == nil })
	time.Sleep(2 * serverDeleteGrace)
	if got := r.pod("web-node1", "kept", isRunning); got.UID != ps.UID {
		t.Fatalf("orphan pod uid = %s, want %s", got.UID, ps.UID)
	}
	if n := countPrefix(r.rt.Events()[len(ctrs):], "stop"); n != 0 {
		t.Fatalf("orphaning stopped %d containers: %v", n, r.rt.Events()[len(ctrs):])
	}

	// The same DaemonSet again adopts the pod without a new pod.
	created := r.createDS(webDaemonSet("web"))
	r.serverPod("web-node1", "adopted", func(p *corev1.Pod) bool {
		ref := metav1.GetControllerOf(p)
		return ref != nil && ref.UID == created.UID
	})
	time.Sleep(500 * time.Millisecond)
	if got := r.pod("web-node1", "running", isRunning); got.UID != ps.UID {
		t.Errorf("adopted pod uid = %s, want %s", got.UID, ps.UID)
	}
	if n := countPrefix(r.rt.Events()[len(ctrs):], "stop"); n != 0 {
		t.Errorf("adoption stopped %d containers", n)
	}

	// Orphaned again, then the pod object deleted: the agent stops it.
	if err := r.c.DaemonSets("default").Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	r.serverPod("web-node1", "orphaned", func(p *corev1.Pod) bool { return metav1.GetControllerOf(p) == nil })
	if err := r.c.Pods("default").Delete(ctx, "web-node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.noPod("web-node1")
}

func TestOrphanDaemonSet(t *testing.T) {
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "ns", Name: "web-node1",
				Labels:      map[string]string{"app": "web", api.LabelControllerRevisionHash: "abc"},
				Annotations: map[string]string{AnnotationDaemonSet: "web", "keep": "me"},
			},
			Spec: corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{ctr("app", "img")}},
		}
	}
	ds := orphanDaemonSet(base())
	if ds == nil {
		t.Fatal("orphan pod gave no DaemonSet")
	}
	if ds.Namespace != "ns" || ds.Name != "web" || ds.Annotations[AnnotationRevision] != "abc" {
		t.Errorf("DaemonSet meta = %+v", ds.ObjectMeta)
	}
	tmpl := ds.Spec.Template
	if _, ok := tmpl.Labels[api.LabelControllerRevisionHash]; ok || tmpl.Labels["app"] != "web" {
		t.Errorf("template labels = %v", tmpl.Labels)
	}
	if _, ok := tmpl.Annotations[AnnotationDaemonSet]; ok || tmpl.Annotations["keep"] != "me" {
		t.Errorf("template annotations = %v", tmpl.Annotations)
	}
	if tmpl.Spec.NodeName != "" {
		t.Errorf("template nodeName = %q, want empty", tmpl.Spec.NodeName)
	}
	d, err := newDesiredPod(SourceServer, ds)
	if err != nil || d.Revision != "abc" {
		t.Errorf("server source revision = %q (%v), want the pinned abc", d.Revision, err)
	}
	if d, _ := newDesiredPod(SourceFile, ds); d.Revision == "abc" {
		t.Error("a file source honoured the revision annotation")
	}

	for name, mutate := range map[string]func(*corev1.Pod){
		"controlled": func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "web", UID: types.UID("u"), Controller: ptr.To(true)}}
		},
		"mirror":           func(p *corev1.Pod) { p.Annotations[annotationConfigMirror] = "uid" },
		"not an agent pod": func(p *corev1.Pod) { delete(p.Annotations, AnnotationDaemonSet) },
		"no revision":      func(p *corev1.Pod) { delete(p.Labels, api.LabelControllerRevisionHash) },
	} {
		p := base()
		mutate(p)
		if ds := orphanDaemonSet(p); ds != nil {
			t.Errorf("%s: got DaemonSet %s, want none", name, ds.Name)
		}
	}
}
