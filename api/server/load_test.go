package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"hash/fnv"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"go.uber.org/goleak"

	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// loadNodes is how many nodes the pod watchers' field selectors spread
// over.
const loadNodes = 8

// loadParams sizes one run of runLoad.
type loadParams struct {
	dsWatchers  int // watchers of every DaemonSet
	podWatchers int // watchers of the pods of one node (spec.nodeName=...)
	writers     int // concurrent writers, each creating, updating and deleting its own objects
	pause       time.Duration
	phase       time.Duration // each of the two churn phases
}

// heapPerWatcher bounds the heap one watcher holds, client and server side
// together (about 37 KiB measured: connection buffers, the subscriber's
// queue, decoders).
const heapPerWatcher = 96 << 10

// digest folds the events of one watch, in order, into a count, the last
// resourceVersion and a hash of the (resourceVersion, type) sequence, so
// that a thousand watchers are checked against the store's history without
// keeping their events.
type digest struct {
	mu   sync.Mutex
	n    int
	last int64
	h    hash.Hash64
	err  error // the first out-of-order event
}

func newDigest() *digest { return &digest{h: fnv.New64a()} }

func (d *digest) add(rv int64, typ watch.EventType) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rv <= d.last && d.err == nil {
		d.err = fmt.Errorf("event %d: resourceVersion %d after %d", d.n+1, rv, d.last)
	}
	d.n++
	d.last = rv
	_ = binary.Write(d.h, binary.BigEndian, rv)
	d.h.Write([]byte(typ))
}

func (d *digest) state() (n int, last int64, sum uint64, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n, d.last, d.h.Sum64(), d.err
}

// follow watches r from opts.ResourceVersion into d until ctx ends. A
// stream the server ends cleanly (it drops a watcher that lags too far) is
// resumed from the last resourceVersion received, as a reflector does;
// resumes counts those. Any other end is an error.
func follow[T, L any](ctx context.Context, r *client.Resource[T, L], opts client.ListOptions, d *digest, resumes *atomic.Int64) error {
	for {
		w, err := r.Watch(ctx, opts)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for ev := range w.Events() {
			o := any(ev.Object).(metav1.Object)
			rv, err := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
			if err != nil {
				w.Stop()
				return fmt.Errorf("%s event: resourceVersion %q: %w", ev.Type, o.GetResourceVersion(), err)
			}
			d.add(rv, ev.Type)
			opts.ResourceVersion = o.GetResourceVersion()
		}
		err = w.Err()
		w.Stop()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		resumes.Add(1)
	}
}

// ackLog is the writes the server acknowledged: the revision it returned
// for each, and the key it wrote.
type ackLog struct {
	mu   sync.Mutex
	keys map[int64]string
}

func (a *ackLog) add(rv string, key string) error {
	rev, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || rev <= 0 {
		return fmt.Errorf("%s: acknowledged with resourceVersion %q", key, rv)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if other, dup := a.keys[rev]; dup {
		return fmt.Errorf("%s and %s both acknowledged at resourceVersion %d", other, key, rev)
	}
	a.keys[rev] = key
	return nil
}

// deleteRV deletes the object at url and returns the resourceVersion of
// the delete, which the server answers with (api/client's Delete drops it).
func deleteRV(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("DELETE %s: %d %s", url, resp.StatusCode, buf.Bytes())
	}
	var m metav1.PartialObjectMetadata
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return "", fmt.Errorf("DELETE %s: %w", url, err)
	}
	return m.ResourceVersion, nil
}

// loadDaemonSet is a DaemonSet no node is eligible for, so that the
// rollout controller pins nothing and the churn stays the writers' own.
func loadDaemonSet(name string) *appsv1.DaemonSet {
	ds := testDaemonSet(name)
	ds.Namespace = "default"
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"load-test": "no-such-node"}
	return ds
}

// loadPod is a pod without owner on node that no DaemonSet selects.
func loadPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"load": "pod"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
	}
}

// writeLoop is one writer's churn until ctx ends: it creates a DaemonSet and
// a pod, updates each twice, deletes both, and starts over, recording
// every acknowledged write in acks.
func writeLoop(ctx context.Context, c *client.Client, hc *http.Client, base string, id int, pause time.Duration, acks *ackLog) error {
	dss, pods := c.DaemonSets("default"), c.Pods("default")
	for i := 0; ; i++ {
		name := fmt.Sprintf("w%d-%d", id, i)
		node := fmt.Sprintf("n%d", (id+i)%loadNodes)
		dsKey, podKey := "/daemonsets/default/"+name, "/pods/default/"+name
		steps := []func() (string, string, error){
			func() (string, string, error) {
				ds, err := dss.Create(ctx, loadDaemonSet(name), client.WriteOptions{})
				if err != nil {
					return dsKey, "", err
				}
				return dsKey, ds.ResourceVersion, nil
			},
			func() (string, string, error) {
				p, err := pods.Create(ctx, loadPod(name, node), client.WriteOptions{})
				if err != nil {
					return podKey, "", err
				}
				return podKey, p.ResourceVersion, nil
			},
			func() (string, string, error) { return updateDS(ctx, dss, name, "busybox:2", dsKey) },
			func() (string, string, error) { return updatePod(ctx, pods, name, "2", podKey) },
			func() (string, string, error) { return updateDS(ctx, dss, name, "busybox:3", dsKey) },
			func() (string, string, error) { return updatePod(ctx, pods, name, "3", podKey) },
			func() (string, string, error) {
				rv, err := deleteRV(ctx, hc, base+"/apis/apps/v1/namespaces/default/daemonsets/"+name)
				return dsKey, rv, err
			},
			func() (string, string, error) {
				rv, err := deleteRV(ctx, hc, base+"/api/v1/namespaces/default/pods/"+name)
				return podKey, rv, err
			},
		}
		for _, step := range steps {
			key, rv, err := step()
			if ctx.Err() != nil {
				// The write may or may not have landed; only acknowledged
				// writes are checked.
				return nil
			}
			if err != nil {
				return fmt.Errorf("writer %d: %s: %w", id, key, err)
			}
			if err := acks.add(rv, key); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
		}
	}
}

// updateDS replaces the image of DaemonSet name unconditionally (the status
// controller's writes would make a conditional one conflict).
func updateDS(ctx context.Context, dss *client.Resource[appsv1.DaemonSet, appsv1.DaemonSetList], name, image, key string) (string, string, error) {
	ds := loadDaemonSet(name)
	ds.Spec.Template.Spec.Containers[0].Image = image
	out, err := dss.Update(ctx, ds, client.WriteOptions{})
	if err != nil {
		return key, "", err
	}
	return key, out.ResourceVersion, nil
}

// updatePod relabels pod name unconditionally.
func updatePod(ctx context.Context, pods *client.Resource[corev1.Pod, corev1.PodList], name, gen, key string) (string, string, error) {
	p, err := pods.Get(ctx, name)
	if err != nil {
		return key, "", err
	}
	p.Labels["gen"] = gen
	p.ResourceVersion = ""
	out, err := pods.Update(ctx, p, client.WriteOptions{})
	if err != nil {
		return key, "", err
	}
	return key, out.ResourceVersion, nil
}

// expectedHistory reads the store's history after from, up to and including
// to, and digests the events each watcher should have seen: every
// DaemonSet change, and the pod changes per node. It also returns the key
// written at each revision.
func expectedHistory(t *testing.T, h *harness, from, to int64) (ds *digest, pods map[string]*digest, keys map[int64]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The whole key space, so that revision `to` (the store's last write)
	// is certain to arrive and ends the read.
	ch, err := h.store.Watch(ctx, "", from)
	if err != nil {
		t.Fatalf("reading the store's history: %v", err)
	}
	ds, pods, keys = newDigest(), map[string]*digest{}, map[int64]string{}
	for i := range loadNodes {
		pods[fmt.Sprintf("n%d", i)] = newDigest()
	}
	for ev := range ch {
		keys[ev.Revision] = ev.KV.Key
		typ := watch.Modified
		switch {
		case ev.Type == cluster.EventDelete:
			typ = watch.Deleted
		case ev.KV.CreateRevision == ev.KV.ModRevision:
			typ = watch.Added
		}
		switch key := ev.KV.Key; {
		case strings.HasPrefix(key, h.srv.daemonSets.prefix("")):
			ds.add(ev.Revision, typ)
		case strings.HasPrefix(key, h.srv.pods.prefix("")):
			o, err := h.srv.pods.decode(ev.KV)
			if err != nil {
				t.Fatalf("history: %s: %v", key, err)
			}
			if d := pods[o.(*corev1.Pod).Spec.NodeName]; d != nil {
				d.add(ev.Revision, typ)
			}
		}
		if ev.Revision >= to {
			return ds, pods, keys
		}
	}
	t.Fatalf("the store's history ended before revision %d: %v", to, ctx.Err())
	return nil, nil, nil
}

// heapInUse is the heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// quiesce waits until the store's revision has not moved for half a
// second (the controllers have answered the last writes) and returns it.
func quiesce(t *testing.T, st cluster.Store) int64 {
	t.Helper()
	rev := st.Revision()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		now := st.Revision()
		if now == rev {
			return rev
		}
		rev = now
	}
	t.Fatalf("the store kept changing for a minute (revision %d)", rev)
	return 0
}

// runLoad runs p.dsWatchers + p.podWatchers watchers over HTTP while
// p.writers writers churn through two phases of p.phase, then checks that
// every watcher saw exactly the store's history of what it watches, in
// order, that the store holds every acknowledged write, that the heap
// stayed bounded and did not grow from one phase to the next, and that no
// goroutine is left.
func runLoad(t *testing.T, open func(*testing.T) cluster.Store, p loadParams) {
	// Registered first, so it runs after the harness and the store (open
	// registers its Close) have shut down. Nothing is ignored: the server
	// closes every connection (httptest.Server.Close), so the clients'
	// transport goroutines end too.
	leakOpts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leakOpts) })
	st := open(t)
	h := serveHarness(t, Config{Store: st, NodeMonitorGracePeriod: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	wc, err := client.New(client.Config{Servers: []string{h.http.URL}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range loadNodes {
		if _, err := wc.Nodes().Create(ctx, testNode(fmt.Sprintf("n%d", i)), client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	from := quiesce(t, st)
	base := heapInUse()

	// The watchers, from revision `from`, on a client of their own.
	watchClient, err := client.New(client.Config{Servers: []string{h.http.URL}})
	if err != nil {
		t.Fatal(err)
	}
	rv := strconv.FormatInt(from, 10)
	type watcher struct {
		node string // "" watches DaemonSets
		d    *digest
	}
	var (
		watchers []watcher
		resumes  atomic.Int64
		wg       sync.WaitGroup
		errMu    sync.Mutex
		errs     []error
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		errs = append(errs, err)
		cancel()
	}
	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	for i := range p.dsWatchers + p.podWatchers {
		w := watcher{d: newDigest()}
		if i >= p.dsWatchers {
			w.node = fmt.Sprintf("n%d", i%loadNodes)
		}
		watchers = append(watchers, w)
		wg.Go(func() {
			var err error
			if w.node == "" {
				err = follow(wctx, watchClient.DaemonSets(""), client.ListOptions{ResourceVersion: rv}, w.d, &resumes)
			} else {
				opts := client.ListOptions{ResourceVersion: rv, FieldSelector: "spec.nodeName=" + w.node}
				err = follow(wctx, watchClient.Pods(""), opts, w.d, &resumes)
			}
			if err != nil {
				fail(fmt.Errorf("watcher %d: %w", i, err))
			}
		})
	}
	eventually(t, "every watcher subscribed", func() bool {
		n := 0
		for _, r := range []*resource{h.srv.daemonSets, h.srv.pods} {
			b := h.srv.broadcasters[r]
			b.mu.Lock()
			n += len(b.subs)
			b.mu.Unlock()
		}
		return n == len(watchers)
	})
	withWatchers := heapInUse()

	acks := &ackLog{keys: map[int64]string{}}
	hc := h.http.Client() // closed with the server
	churn := func(id0 int) {
		pctx, stop := context.WithTimeout(ctx, p.phase)
		defer stop()
		var writers sync.WaitGroup
		for i := range p.writers {
			writers.Go(func() {
				if err := writeLoop(pctx, wc, hc, h.http.URL, id0+i, p.pause, acks); err != nil {
					fail(err)
				}
			})
		}
		writers.Wait()
	}
	// settled is the heap once the controllers have answered the phase's
	// writes and the broadcasters have handed every event on, so that
	// it does not count events in flight.
	settled := func() uint64 {
		quiesce(t, st)
		eventually(t, "the broadcasters drained", func() bool {
			for _, b := range h.srv.broadcasters {
				b.mu.Lock()
				for sub := range b.subs {
					if len(sub.queue) > 0 {
						b.mu.Unlock()
						return false
					}
				}
				b.mu.Unlock()
			}
			return true
		})
		return heapInUse()
	}
	churn(0)
	afterPhase1 := settled()
	rev1 := st.Revision()
	phase1Writes := rev1 - from
	churn(p.writers)
	afterPhase2 := settled()
	phase2Writes := st.Revision() - rev1

	to := quiesce(t, st)
	wantDS, wantPods, keys := expectedHistory(t, h, from, to)
	for rev, key := range acks.keys {
		if keys[rev] != key {
			t.Errorf("write of %s acknowledged at resourceVersion %d, but the store's history has %q there", key, rev, keys[rev])
		}
	}
	want := func(w watcher) *digest {
		if w.node == "" {
			return wantDS
		}
		return wantPods[w.node]
	}
	eventually(t, "every watcher caught up", func() bool {
		for _, w := range watchers {
			_, last, _, _ := w.d.state()
			_, wantLast, _, _ := want(w).state()
			if last < wantLast && ctx.Err() == nil {
				return false
			}
		}
		return true
	})
	wrong := 0
	for i, w := range watchers {
		n, last, sum, err := w.d.state()
		wn, wlast, wsum, _ := want(w).state()
		if err != nil || n != wn || last != wlast || sum != wsum {
			if wrong++; wrong <= 5 {
				t.Errorf("watcher %d (node %q): %d events up to %d (%v), want the store's %d up to %d (hash differs: %v)",
					i, w.node, n, last, err, wn, wlast, sum != wsum)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d watchers did not see exactly the store's history", wrong, len(watchers))
	}
	stopWatchers()
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	dsN, _, _, _ := wantDS.state()
	t.Logf("%d watchers, %d writers, 2 phases of %v: %d acknowledged writes, %d DaemonSet events per DaemonSet watcher, %d resumes after the server dropped a lagging watcher",
		len(watchers), p.writers, p.phase, len(acks.keys), dsN, resumes.Load())

	// Memory: beyond what the broadcasters' rings retain (each store
	// write adds at most one event to one ring, and a ring keeps at most
	// ringSize), the watchers' heap is bounded per watcher, and the second
	// phase adds at most 10% (the collector's slack).
	ringRoom := func(writes int64) uint64 {
		return uint64(min(int64(len(h.srv.broadcasters)*ringSize), writes)) * ringEventBytes
	}
	perWatcher := (int64(withWatchers) - int64(base)) / int64(len(watchers))
	t.Logf("heap in use: %d MiB before the watchers, %d MiB with them (%d KiB per watcher), %d MiB after phase 1 (%d store writes), %d MiB after phase 2 (%d store writes)",
		base>>20, withWatchers>>20, perWatcher>>10, afterPhase1>>20, phase1Writes, afterPhase2>>20, phase2Writes)
	if bound := base + uint64(len(watchers))*heapPerWatcher + ringRoom(phase1Writes); afterPhase1 > bound {
		t.Errorf("heap in use after phase 1 (%d store writes): %d MiB, want at most %d MiB (%d KiB per watcher)",
			phase1Writes, afterPhase1>>20, bound>>20, heapPerWatcher>>10)
	}
	if bound := afterPhase1 + afterPhase1/10 + ringRoom(phase2Writes); afterPhase2 > bound {
		t.Errorf("heap grew from %d MiB after phase 1 to %d MiB after phase 2 (%d store writes), want at most %d MiB",
			afterPhase1>>20, afterPhase2>>20, phase2Writes, bound>>20)
	}
}

// ringEventBytes bounds what one event in a broadcaster's ring holds: the
// decoded object and its encoded frame (the test's objects, and the
// controllers' ControllerRevisions and Events, are under 2 KiB as JSON;
// about 8 KiB per store write was measured).
const ringEventBytes = 16 << 10

// boltStore opens a bolt store that keeps the whole test's history.
func boltStore(t *testing.T) cluster.Store { return openStore(t, 1<<20) }

// TestSoakLoad is issue 9's load test: a thousand HTTP watchers
// (DaemonSets, and pods by node) while writers churn, for two phases of
// 2s (30s with twice the writers under make soak).
func TestSoakLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a thousand connections")
	}
	p := loadParams{dsWatchers: 800, podWatchers: 200, writers: 8, pause: 20 * time.Millisecond,
		phase: 2 * time.Second}
	if os.Getenv("DAEMONLET_SOAK") != "" { // make soak
		p.writers, p.phase = 16, 30*time.Second
	}
	runLoad(t, boltStore, p)
}

// TestLoadTwoHundredWriters checks resourceVersion order and exactly-once
// delivery to watchers under 200 concurrent writers.
func TestLoadTwoHundredWriters(t *testing.T) {
	runLoad(t, boltStore, twoHundredWriters)
}

// TestLoadTwoHundredWritersEtcd is TestLoadTwoHundredWriters on a
// one-member etcd cluster.
func TestLoadTwoHundredWritersEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	runLoad(t, func(t *testing.T) cluster.Store {
		st, err := cluster.OpenEtcd(cluster.EtcdConfig{Endpoints: c.Endpoints(), HistoryLimit: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}, twoHundredWriters)
}

var twoHundredWriters = loadParams{
	dsWatchers: 16, podWatchers: 16, writers: 200,
	phase: time.Second,
}
