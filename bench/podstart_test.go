package bench_test

// Figure 1, pod start overhead: from a DaemonSet appearing to the agent to
// its container's task running, next to the containerd client's own
// create and start of the same image, interleaved in the same run.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/agent"
	apiclient "github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
	"github.com/daemonlet/daemonlet/internal/testimage"
)

// podStartTimeout bounds one start; a healthy one takes well under a second.
const podStartTimeout = 60 * time.Second

// TestBenchPodStart times pod starts of one `daemonlet agent` process
// that has both a manifest folder and a `daemonlet server` (its own
// process, HTTPS) as sources, on the private containerd, with the test
// image already imported. Each round starts one DaemonSet through the file
// source, one through the server and one container with the containerd
// client directly, in an order that rotates every round; a warm-up round
// is left out. The clock stops at containerd's /tasks/start event of the
// container (its own timestamp), not at the agent's report; each pod is
// then checked to be reported running and removed before the next start.
func TestBenchPodStart(t *testing.T) {
	rounds := bench.Pick(25, 2)
	dir := t.TempDir()
	srv := startServerProcess(t, dir, 1)
	admin, tlsFiles := srv.admin, srv.tls
	node := fleetsim.NodeName(0)
	tokenPath := filepath.Join(dir, "node.token")
	if err := os.WriteFile(tokenPath, []byte(fleetsim.NodeToken(node)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newNodeAgent(t, node, "--server", srv.url, "--token-file", tokenPath, "--certificate-authority", tlsFiles.CertFile)
	starts := nodeTaskStarts(t, a.ctd)
	a.start()
	a.waitPods(60*time.Second, 50*time.Millisecond, "the agent to answer", nodeAllRunning(0))
	ref := newPodStartRef(t, a.ctd)

	ctx := context.Background()
	var fileD, serverD, refD []time.Duration
	fileStart := func(name string) time.Duration {
		t0 := time.Now()
		a.writeManifest(name+".yaml", nodeDaemonSetYAML(t, name))
		at := nodeWaitTaskStart(t, starts, a.namespace, a.isPodContainer(name+"-"+node), podStartTimeout)
		a.waitRunningThenGone(name, func() { a.removeManifest(name + ".yaml") })
		return at.Sub(t0)
	}
	serverStart := func(name string) time.Duration {
		if _, err := admin.DaemonSets("default").Create(ctx, nodeDaemonSet(name), apiclient.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		at := nodeWaitTaskStart(t, starts, a.namespace, a.isPodContainer(name+"-"+node), podStartTimeout)
		a.waitRunningThenGone(name, func() {
			if err := admin.DaemonSets("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		})
		return at.Sub(t0)
	}
	for i := range rounds + 1 {
		kinds := []func(){
			func() { fileD = append(fileD, fileStart(fmt.Sprintf("file-%02d", i))) },
			func() { serverD = append(serverD, serverStart(fmt.Sprintf("server-%02d", i))) },
			func() { refD = append(refD, ref.start(t, starts, fmt.Sprintf("ref-%02d", i))) },
		}
		for k := range kinds {
			kinds[(i+k)%len(kinds)]()
		}
		if i == 0 {
			// The warm-up: first use of the image's snapshot, the
			// bridge's creation, the server's first watch events.
			fileD, serverD, refD = nil, nil, nil
		}
	}
	for what, ds := range map[string][]time.Duration{"file": fileD, "server": serverD, "reference": refD} {
		for _, d := range ds {
			if d <= 0 || d > podStartTimeout {
				t.Fatalf("%s start took %v: the clock is wrong", what, d)
			}
		}
		if len(ds) != rounds {
			t.Fatalf("%d %s starts, want %d", len(ds), what, rounds)
		}
	}
	refP50, refP99, _ := quantiles(refD)
	cond := fmt.Sprintf("%d starts each, interleaved in rotating order after a warm-up, image present; clock: from %%s to containerd's /tasks/start event of the pod's container. "+
		"The agent (one `daemonlet agent` process) does besides: %%s, bbolt writes (desired state, pod record), a sandbox (net, uts and ipc namespaces, CNI bridge + host-local IPAM, hosts and resolv.conf), "+
		"its log driver (binary:// logging, a process per container) and an image lookup; "+
		"reference: the containerd v2 client in the test, GetImage + NewContainer (new snapshot, spec from the image config: runc makes the namespaces, no CNI) + NewTask (null IO) + Start; %d CPUs shared",
		rounds, runtime.NumCPU())
	for _, src := range []struct {
		name, from, does string
		ds               []time.Duration
	}{
		{"file", "the manifest renamed into --pod-manifest-path", "inotify (a rename in is read at once) and a read of the folder", fileD},
		{"server", "the DaemonSet's create request returning (`daemonlet server` process, HTTPS, bbolt)", fmt.Sprintf("the watch (a change after a quiet %v goes out at once)", agent.DefaultServerCoalesce), serverD},
	} {
		p50, p99, _ := quantiles(src.ds)
		c := fmt.Sprintf(cond, src.from, src.does)
		bench.Record(t, bench.Figure{
			Name: "pod-start-" + src.name + "-p50", Value: p50, Unit: "s",
			Reference: refP50, ReferenceName: "containerd client create+start p50",
			Target: "ratio <= 1.3", Met: p50/refP50 <= 1.3, Conditions: c,
		})
		bench.Record(t, bench.Figure{
			Name: "pod-start-" + src.name + "-p99", Value: p99, Unit: "s",
			Reference: refP99, ReferenceName: "containerd client create+start p99",
			Target: "< 1 s", Met: p99 < 1, Conditions: c,
		})
	}
}

// waitRunningThenGone waits until the agent reports the DaemonSet's pod
// running, calls remove and waits until the pod is gone from /pods.
func (a *nodeAgent) waitRunningThenGone(ds string, remove func()) {
	a.t.Helper()
	a.waitPods(podStartTimeout, 20*time.Millisecond, ds+" to be reported running", func(pods []agent.PodStatus) bool {
		for _, p := range pods {
			if p.DaemonSet == ds && nodePodRunning(p) {
				return true
			}
		}
		return false
	})
	remove()
	a.waitPods(podStartTimeout, 20*time.Millisecond, ds+" to be removed", nodeAllRunning(0))
}

// podStartRef is the reference of figure 1: the containerd client alone,
// in a namespace of its own holding the test image, unpacked.
type podStartRef struct {
	cl  *client.Client
	ctx context.Context
	ns  string
}

// newPodStartRef imports and unpacks the test image into a new namespace;
// cleanup removes the image and the namespace.
func newPodStartRef(t testing.TB, ctd *ctdtest.Containerd) *podStartRef {
	t.Helper()
	cl, err := ctd.Client()
	if err != nil {
		t.Fatal(err)
	}
	r := &podStartRef{cl: cl, ns: "dlbench-ref-" + nodeToken(t)}
	r.ctx = namespaces.WithNamespace(context.Background(), r.ns)
	t.Cleanup(func() {
		imgs, _ := cl.ImageService().List(r.ctx)
		for _, i := range imgs {
			_ = cl.ImageService().Delete(r.ctx, i.Name)
		}
		_ = cl.NamespaceService().Delete(r.ctx, r.ns)
		cl.Close()
	})
	f, err := os.Open(nodeImageTar())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs, err := cl.Import(r.ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 {
		t.Fatalf("imported %d images, want 1", len(imgs))
	}
	if err := client.NewImage(cl, imgs[0]).Unpack(r.ctx, ""); err != nil {
		t.Fatal(err)
	}
	return r
}

// start creates and starts container id as a plain containerd client
// does, returns how long until its task start event, and removes it.
func (r *podStartRef) start(t testing.TB, starts <-chan nodeTaskStart, id string) time.Duration {
	t.Helper()
	t0 := time.Now()
	img, err := r.cl.GetImage(r.ctx, testimage.Ref)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.cl.NewContainer(r.ctx, id, client.WithImage(img), client.WithNewSnapshot(id, img), client.WithNewSpec(oci.WithImageConfig(img)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Delete(r.ctx, client.WithSnapshotCleanup); err != nil {
			t.Errorf("delete %s: %v", id, err)
		}
	}()
	task, err := c.NewTask(r.ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := task.Delete(r.ctx, client.WithProcessKill); err != nil {
			t.Errorf("delete task %s: %v", id, err)
		}
	}()
	if err := task.Start(r.ctx); err != nil {
		t.Fatal(err)
	}
	at := nodeWaitTaskStart(t, starts, r.ns, func(cid string) bool { return cid == id }, podStartTimeout)
	if st, err := task.Status(r.ctx); err != nil || st.Status != client.Running {
		t.Fatalf("reference task %s: %+v, %v", id, st, err)
	}
	return at.Sub(t0)
}
