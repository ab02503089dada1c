package main

// The server half of issue 9's faults: a real `daemonlet server` killed
// with SIGKILL while clients write, then restarted; no acknowledged write
// may be lost and resourceVersions keep increasing.

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// genAnnotation carries a DaemonSet's generation in the crash tests, the
// ConfigMaps carry it in data.
const genAnnotation = "crash.daemonlet.io/gen"

// crashObject is one object a crash-test writer owns: what the server
// acknowledged last, and the write it sent when the server died.
type crashObject struct {
	ds   bool // a DaemonSet, else a ConfigMap
	name string
	// exists, gen and rv are the state of the last acknowledged write (or
	// what the server showed after the last restart).
	exists bool
	gen    int
	rv     int64
	// pending is the write whose answer never came, nil when none: the
	// object may be at that state instead.
	pending *crashWrite
}

// crashWrite is one write: a delete, or a create or update to gen.
type crashWrite struct {
	del bool
	gen int
}

func (o *crashObject) key() string {
	if o.ds {
		return "/daemonsets/default/" + o.name
	}
	return "/configmaps/default/" + o.name
}

func crashDaemonSet(name string, gen int) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{genAnnotation: strconv.Itoa(gen)}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: fmt.Sprintf("example.com/crash:%d", gen)}}},
			},
		},
	}
}

func crashConfigMap(name string, gen int) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Data:       map[string]string{"gen": strconv.Itoa(gen)},
	}
}

// send performs w on o and returns the acknowledged resourceVersion (0
// for a delete).
func (o *crashObject) send(ctx context.Context, c *client.Client, w crashWrite) (int64, error) {
	var meta metav1.Object
	var err error
	switch {
	case w.del && o.ds:
		return 0, c.DaemonSets("default").Delete(ctx, o.name, metav1.DeleteOptions{})
	case w.del:
		return 0, c.ConfigMaps("default").Delete(ctx, o.name, metav1.DeleteOptions{})
	case o.ds && !o.exists:
		meta, err = c.DaemonSets("default").Create(ctx, crashDaemonSet(o.name, w.gen), client.WriteOptions{})
	case o.ds:
		meta, err = c.DaemonSets("default").Update(ctx, crashDaemonSet(o.name, w.gen), client.WriteOptions{})
	case !o.exists:
		meta, err = c.ConfigMaps("default").Create(ctx, crashConfigMap(o.name, w.gen), client.WriteOptions{})
	default:
		meta, err = c.ConfigMaps("default").Update(ctx, crashConfigMap(o.name, w.gen), client.WriteOptions{})
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(meta.GetResourceVersion(), 10, 64)
}

// observe reads o from the server: whether it exists, its generation and
// resourceVersion.
func (o *crashObject) observe(ctx context.Context, c *client.Client) (exists bool, gen int, rv int64, err error) {
	var meta metav1.Object
	var g string
	if o.ds {
		ds, err := c.DaemonSets("default").Get(ctx, o.name)
		if err == nil {
			meta, g = ds, ds.Annotations[genAnnotation]
		}
		if apierrors.IsNotFound(err) {
			return false, 0, 0, nil
		}
		if err != nil {
			return false, 0, 0, err
		}
	} else {
		cm, err := c.ConfigMaps("default").Get(ctx, o.name)
		if err == nil {
			meta, g = cm, cm.Data["gen"]
		}
		if apierrors.IsNotFound(err) {
			return false, 0, 0, nil
		}
		if err != nil {
			return false, 0, 0, err
		}
	}
	if gen, err = strconv.Atoi(g); err != nil {
		return false, 0, 0, fmt.Errorf("%s: generation %q", o.key(), g)
	}
	rv, err = strconv.ParseInt(meta.GetResourceVersion(), 10, 64)
	return true, gen, rv, err
}

// crashWriter writes its objects one at a time until the server stops
// answering: it creates an absent object, and updates (two times in
// three) or deletes a present one. maxRV is the highest resourceVersion
// the server acknowledged to it.
type crashWriter struct {
	c       *client.Client
	rng     *rand.Rand
	objects []*crashObject
	writes  int
	maxRV   int64
	// inFlight counts the writes cut by a kill, landed those of them the
	// restarted server shows applied.
	inFlight, landed int
}

// run writes until a write fails; an unavailable server ends the run
// (the write in flight stays pending), any other error is returned.
func (w *crashWriter) run(ctx context.Context) error {
	for ctx.Err() == nil {
		o := w.objects[w.rng.IntN(len(w.objects))]
		next := crashWrite{gen: o.gen + 1}
		if o.exists && w.rng.IntN(3) == 0 {
			next = crashWrite{del: true}
		}
		o.pending = &next
		rv, err := o.send(ctx, w.c, next)
		if errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %+v: %w", o.key(), next, err)
		}
		o.pending, o.exists, o.gen, o.rv = nil, !next.del, next.gen, rv
		w.writes++
		w.maxRV = max(w.maxRV, rv)
	}
	return nil
}

// check compares the restarted server's objects with what was
// acknowledged: each is at its acknowledged state (a later write of its
// own, or a controller's status write, may have moved its resourceVersion
// on) or at the state of the write in flight at the kill. It then adopts
// what the server shows.
func (w *crashWriter) check(ctx context.Context) []error {
	var errs []error
	for _, o := range w.objects {
		exists, gen, rv, err := o.observe(ctx, w.c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		acked := exists == o.exists && (!exists || gen == o.gen && rv >= o.rv)
		landed := o.pending != nil && exists == !o.pending.del && (!exists || gen == o.pending.gen)
		if o.pending != nil {
			w.inFlight++
			if landed && !acked {
				w.landed++
			}
		}
		if !acked && !landed {
			errs = append(errs, fmt.Errorf("%s: acknowledged exists=%v gen=%d at resourceVersion %d, in flight %+v; the restarted server has exists=%v gen=%d resourceVersion %d",
				o.key(), o.exists, o.gen, o.rv, o.pending, exists, gen, rv))
		}
		o.exists, o.gen, o.rv, o.pending = exists, gen, rv, nil
	}
	return errs
}

// crashLoop runs rounds of: writers write, the server (s) is killed with
// SIGKILL after a random delay, restarted, and every acknowledged write is
// checked; a probe write after each restart must get a resourceVersion
// above every one acknowledged before. It returns the writers.
func crashLoop(t *testing.T, s *serverProc, rounds int) []*crashWriter {
	rng := soakRNG(t)
	var writers []*crashWriter
	for i := range 6 {
		c, err := client.New(client.Config{Servers: []string{s.url()}, Token: adminToken, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		w := &crashWriter{c: c, rng: rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))}
		for j := range 4 {
			w.objects = append(w.objects, &crashObject{ds: i%2 == 0, name: fmt.Sprintf("crash-%d-%d", i, j)})
		}
		writers = append(writers, w)
	}
	probe, err := client.New(client.Config{Servers: []string{s.url()}, Token: adminToken, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var maxRV int64
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, len(writers))
		for i, w := range writers {
			wg.Go(func() { errs[i] = w.run(ctx) })
		}
		time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
		s.stop(syscall.SIGKILL)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		s.start()
		for _, w := range writers {
			maxRV = max(maxRV, w.maxRV)
			for _, err := range w.check(ctx) {
				t.Errorf("round %d: %v", round, err)
			}
		}
		cm, err := probe.ConfigMaps("default").Update(ctx, crashConfigMap("probe", round), client.WriteOptions{})
		if apierrors.IsNotFound(err) {
			cm, err = probe.ConfigMaps("default").Create(ctx, crashConfigMap("probe", round), client.WriteOptions{})
		}
		if err != nil {
			t.Fatalf("round %d: probe write: %v", round, err)
		}
		if rv, _ := strconv.ParseInt(cm.ResourceVersion, 10, 64); rv <= maxRV {
			t.Errorf("round %d: a write after the restart got resourceVersion %d, not above the %d acknowledged before", round, rv, maxRV)
		} else {
			maxRV = rv
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	var total, inFlight, landed int
	for _, w := range writers {
		total, inFlight, landed = total+w.writes, inFlight+w.inFlight, landed+w.landed
	}
	t.Logf("%d rounds, %d acknowledged writes, %d cut by a kill of which %d landed, last resourceVersion %d", rounds, total, inFlight, landed, maxRV)
	return writers
}

// TestSoakServerCrash kills a single server on its bolt store with SIGKILL
// during writes (3 rounds; 50 under make soak) and finally opens the store
// file itself: it opens cleanly and holds what the server showed.
func TestSoakServerCrash(t *testing.T) {
	s := newServer(t)
	s.start()
	writers := crashLoop(t, s, soak(3, 50))
	s.stop(syscall.SIGKILL)
	st, err := cluster.OpenBolt(filepath.Join(s.dataDir, "cluster.db"), cluster.BoltOptions{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("the store after a SIGKILL: %v", err)
	}
	defer st.Close()
	for _, w := range writers {
		for _, o := range w.objects {
			kv, err := st.Get(t.Context(), o.key())
			switch {
			case errdefs.IsNotFound(err) && !o.exists:
			case err != nil:
				t.Errorf("%s in the store file: %v (the server showed exists=%v)", o.key(), err, o.exists)
			case !o.exists:
				t.Errorf("%s is in the store file, the server showed it absent", o.key())
			case kv.ModRevision < o.rv:
				t.Errorf("%s in the store file at revision %d, the server showed %d", o.key(), kv.ModRevision, o.rv)
			}
		}
	}
}

// TestSoakServerCrashEtcd kills one server replica on a three-member etcd
// cluster (etcd keeps running) during writes, 2 rounds (50 under make
// soak).
func TestSoakServerCrashEtcd(t *testing.T) {
	etcd := etcdtest.StartCluster(t, 3)
	s := newServer(t)
	s.extraArgs = []string{"--etcd-servers", strings.Join(etcd.Endpoints(), ","), "--etcd-prefix", "/crash"}
	s.start()
	crashLoop(t, s, soak(2, 50))
}

// rolloutAgent plays the agent of one node against a server process, from
// the client side, as agent/pod_report.go reports: it registers its Node,
// runs (as Pod objects) the revisions its Node's pins name for the
// DaemonSet (the current template's when unpinned), reports each new pod
// Ready after readyDelay, and deletes the pods of revisions no longer
// pinned. Errors (the server is down) are retried on the next pass.
type rolloutAgent struct {
	node       string
	c          *client.Client
	ds         string
	readyDelay time.Duration
}

func (a *rolloutAgent) register(ctx context.Context) error {
	now := metav1.Now()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.node, Labels: map[string]string{"kubernetes.io/hostname": a.node}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now,
		}}},
	}
	_, err := a.c.Nodes().Create(ctx, n, client.WriteOptions{})
	return err
}

// pass is one look at the pins and pods, and the writes they call for.
func (a *rolloutAgent) pass(ctx context.Context) error {
	n, err := a.c.Nodes().Get(ctx, a.node)
	if err != nil {
		return err
	}
	pins, err := api.ParseNodeRevisions(n)
	if err != nil {
		return err
	}
	ds, err := a.c.DaemonSets("default").Get(ctx, a.ds)
	if err != nil {
		return err
	}
	want := pins["default/"+a.ds]
	if len(want) == 0 {
		want = []string{api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)}
	}
	pods, err := a.c.Pods("default").List(ctx, client.ListOptions{FieldSelector: "spec.nodeName=" + a.node})
	if err != nil {
		return err
	}
	for _, h := range want {
		i := slices.IndexFunc(pods.Items, func(p corev1.Pod) bool { return p.Labels[api.LabelControllerRevisionHash] == h })
		if i < 0 {
			if _, err := a.c.Pods("default").Create(ctx, rolloutPod(ds, a.node, h), client.WriteOptions{}); err != nil {
				return err
			}
			continue
		}
		p := &pods.Items[i]
		if !podReady(p) && time.Since(p.CreationTimestamp.Time) >= a.readyDelay {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
			if _, err := a.c.Pods("default").UpdateStatus(ctx, p); err != nil {
				return err
			}
		}
	}
	for _, p := range pods.Items {
		if !slices.Contains(want, p.Labels[api.LabelControllerRevisionHash]) {
			if err := a.c.Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	return nil
}

// run passes every 100ms until ctx ends.
func (a *rolloutAgent) run(ctx context.Context) {
	for ctx.Err() == nil {
		_ = a.pass(ctx) // the server may be down: the next pass retries
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rolloutPod is the pod of ds's revision hash on node, not Ready yet.
func rolloutPod(ds *appsv1.DaemonSet, node, hash string) *corev1.Pod {
	labels := map[string]string{api.LabelControllerRevisionHash: hash}
	maps.Copy(labels, ds.Spec.Template.Labels)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-" + node + "-" + hash, Namespace: "default", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}},
		Spec: *ds.Spec.Template.Spec.DeepCopy(),
	}
	p.Spec.NodeName = node
	return p
}

// rolloutState is one consistent read of the fleet: the nodes without a
// Ready pod of the DaemonSet, and those whose only pod is a Ready one of
// hash.
func rolloutState(ctx context.Context, c *client.Client, app, hash string, nodes []string) (unavailable, done int, err error) {
	pods, err := c.Pods("default").List(ctx, client.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return 0, 0, err
	}
	for _, n := range nodes {
		var ready, total, current int
		for _, p := range pods.Items {
			if p.Spec.NodeName != n {
				continue
			}
			total++
			if podReady(&p) {
				ready++
				if p.Labels[api.LabelControllerRevisionHash] == hash {
					current++
				}
			}
		}
		if ready == 0 {
			unavailable++
		}
		if total == 1 && current == 1 {
			done++
		}
	}
	return unavailable, done, nil
}

// rollDaemonSet is the rolled-out DaemonSet at generation gen:
// RollingUpdate, one node unavailable at a time.
func rollDaemonSet(gen int) *appsv1.DaemonSet {
	ds := crashDaemonSet("roll", gen)
	one := intstr.FromInt32(1)
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &one}}
	return ds
}

// TestServerCrashDuringRollout kills the server with SIGKILL in the middle
// of a RollingUpdate with maxUnavailable 1 over six nodes (client-side
// agents): after the restart the rollout completes, and no sampled moment
// had more than one node without a Ready pod.
func TestServerCrashDuringRollout(t *testing.T) {
	nodes := []string{"roll-0", "roll-1", "roll-2", "roll-3", "roll-4", "roll-5"}
	s := newServer(t, nodes...)
	s.start()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	admin, err := client.New(client.Config{Servers: []string{s.url()}, Token: adminToken, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The hashes are of the templates as stored, defaults set.
	ds, err := admin.DaemonSets("default").Create(ctx, rollDaemonSet(1), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var agents sync.WaitGroup
	defer agents.Wait()
	defer cancel()
	for _, n := range nodes {
		c, err := client.New(client.Config{Servers: []string{s.url()}, Token: nodeToken(n), Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		a := &rolloutAgent{node: n, c: c, ds: "roll", readyDelay: 300 * time.Millisecond}
		if err := a.register(ctx); err != nil {
			t.Fatal(err)
		}
		agents.Go(func() { a.run(ctx) })
	}
	first := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	waitUntil(t, 30*time.Second, "every node to run the first revision", func() error {
		_, done, err := rolloutState(ctx, admin, "roll", first, nodes)
		if err == nil && done != len(nodes) {
			err = fmt.Errorf("%d of %d nodes", done, len(nodes))
		}
		return err
	})

	// The sampler reads the fleet every 50ms while the server is up.
	var (
		mu             sync.Mutex
		worst, samples int
		second         string
		progressAtKill int
	)
	sample := func() {
		mu.Lock()
		hash := second
		mu.Unlock()
		unavailable, _, err := rolloutState(ctx, admin, "roll", hash, nodes)
		if err != nil {
			return // the server is down
		}
		mu.Lock()
		defer mu.Unlock()
		worst, samples = max(worst, unavailable), samples+1
	}
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for ctx.Err() == nil {
			sample()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer sampler.Wait()

	ds, err = admin.DaemonSets("default").Update(ctx, rollDaemonSet(2), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	second = api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	mu.Unlock()
	waitUntil(t, 30*time.Second, "the rollout to be half way", func() error {
		_, done, err := rolloutState(ctx, admin, "roll", second, nodes)
		if err == nil && (done < 1 || done >= len(nodes)-1) {
			err = fmt.Errorf("%d of %d nodes updated", done, len(nodes))
		}
		if err == nil {
			progressAtKill = done
		}
		return err
	})
	s.stop(syscall.SIGKILL)
	time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
	s.start()
	waitUntil(t, 60*time.Second, "the rollout to complete after the restart", func() error {
		_, done, err := rolloutState(ctx, admin, "roll", second, nodes)
		if err == nil && done != len(nodes) {
			err = fmt.Errorf("%d of %d nodes updated", done, len(nodes))
		}
		return err
	})
	cancel()
	sampler.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("killed with %d of %d nodes updated; %d samples, at most %d node(s) unavailable", progressAtKill, len(nodes), samples, worst)
	if worst > 1 {
		t.Errorf("%d nodes were unavailable at once, maxUnavailable is 1", worst)
	}
}
