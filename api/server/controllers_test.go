package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/daemonlet/daemonlet/api"
)

func TestComputeDaemonSetStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ds := testDaemonSet("web")
	ds.UID, ds.Generation, ds.Spec.MinReadySeconds = "ds-uid", 3, 10
	api.SetDefaultsDaemonSet(ds)
	hash := api.TemplateHash(&ds.Spec.Template, nil)
	tainted := testNode("tainted")
	tainted.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
	nodes := []*corev1.Node{testNode("a"), testNode("b"), testNode("c"), tainted}
	long, recent := now.Add(-time.Minute), now.Add(-4*time.Second)

	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want appsv1.DaemonSetStatus // ObservedGeneration is always 3
		due  time.Duration
	}{
		{"no pods", nil, appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberUnavailable: 3}, 0},
		{"all available", []*corev1.Pod{testPod(ds, "a", hash, true, long), testPod(ds, "b", hash, true, long), testPod(ds, "c", hash, true, long)},
			appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, NumberReady: 3, NumberAvailable: 3, UpdatedNumberScheduled: 3}, 0},
		{"ready within minReadySeconds, old revision, not ready", []*corev1.Pod{testPod(ds, "a", hash, true, recent), testPod(ds, "b", "old", true, long), testPod(ds, "c", hash, false, long)},
			appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, NumberReady: 2, NumberAvailable: 1, UpdatedNumberScheduled: 2, NumberUnavailable: 2}, 6 * time.Second},
		{"misscheduled on a tainted node and an unknown node ignored", []*corev1.Pod{testPod(ds, "tainted", hash, true, long), testPod(ds, "gone", hash, true, long)},
			appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberMisscheduled: 1, NumberUnavailable: 3}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, due := computeDaemonSetStatus(ds, nodes, tc.pods, now)
			tc.want.ObservedGeneration = 3
			if !equality.Semantic.DeepEqual(got, tc.want) || due != tc.due {
				t.Errorf("got %+v due %v\nwant %+v due %v", got, due, tc.want, tc.due)
			}
		})
	}
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestStatusControllerWritesStatus(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ds := testDaemonSet("web")
	h.must("POST", dsPath, "", ds, http.StatusCreated, ds)
	h.must("POST", "/api/v1/nodes", "", testNode("a"), http.StatusCreated, nil)
	h.must("POST", "/api/v1/nodes", "", testNode("b"), http.StatusCreated, nil)
	hash := api.TemplateHash(&ds.Spec.Template, nil)
	h.must("POST", "/api/v1/namespaces/default/pods", "", testPod(ds, "a", hash, true, time.Now().Add(-time.Hour)), http.StatusCreated, nil)
	var got appsv1.DaemonSet
	eventually(t, "status desired 2, ready 1", func() bool {
		h.must("GET", dsPath+"/web", "", nil, http.StatusOK, &got)
		s := got.Status
		return s.ObservedGeneration == 1 && s.DesiredNumberScheduled == 2 && s.CurrentNumberScheduled == 1 &&
			s.NumberReady == 1 && s.NumberAvailable == 1 && s.UpdatedNumberScheduled == 1 && s.NumberUnavailable == 1
	})
}

func TestNodeHeartbeatTimeout(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	h := newHarness(t, nil, clk, false)
	var n corev1.Node
	h.must("POST", "/api/v1/nodes", "", testNode("n1"), http.StatusCreated, &n)

	// A heartbeat that only moves lastHeartbeatTime writes nothing.
	rev := h.store.Revision()
	n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(clk.Now().Add(time.Second))
	h.must("PUT", "/api/v1/nodes/n1/status", "", &n, http.StatusOK, nil)
	if got := h.store.Revision(); got != rev {
		t.Errorf("a heartbeat wrote to the store: revision %d → %d", rev, got)
	}

	ready := func() corev1.ConditionStatus {
		var cur corev1.Node
		h.must("GET", "/api/v1/nodes/n1", "", nil, http.StatusOK, &cur)
		n = cur
		return cur.Status.Conditions[0].Status
	}
	eventually(t, "Ready=Unknown", func() bool {
		clk.Step(DefaultNodeMonitorGracePeriod / 4)
		return ready() == corev1.ConditionUnknown
	})
	if c := n.Status.Conditions[0]; c.Reason != nodeStatusUnknownReason || c.Message != nodeStatusUnknownMessage {
		t.Errorf("condition %+v", c)
	}
	// The next heartbeat reports Ready=True again and is written.
	n.Status.Conditions[0].Status, n.Status.Conditions[0].Reason = corev1.ConditionTrue, "KubeletReady"
	h.must("PUT", "/api/v1/nodes/n1/status", "", &n, http.StatusOK, nil)
	if ready() != corev1.ConditionTrue {
		t.Error("not Ready again after a heartbeat")
	}
}

func TestOrphanAndAdopt(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ds := testDaemonSet("web")
	h.must("POST", dsPath, "", ds, http.StatusCreated, ds)
	h.must("POST", "/api/v1/nodes", "", testNode("a"), http.StatusCreated, nil)
	h.must("POST", "/api/v1/namespaces/default/pods", "", testPod(ds, "a", "h1", true, time.Now()), http.StatusCreated, nil)

	orphan := metav1.DeletePropagationOrphan
	h.must("DELETE", dsPath+"/web", "", &metav1.DeleteOptions{PropagationPolicy: &orphan}, http.StatusOK, nil)
	var pod corev1.Pod
	h.must("GET", "/api/v1/namespaces/default/pods/web-a", "", nil, http.StatusOK, &pod)
	if len(pod.OwnerReferences) != 0 || pod.Annotations[AnnotationDaemonSet] != "web" {
		t.Fatalf("orphaned pod: owners %v annotations %v", pod.OwnerReferences, pod.Annotations)
	}

	again := testDaemonSet("web")
	h.must("POST", dsPath, "", again, http.StatusCreated, again)
	h.must("GET", "/api/v1/namespaces/default/pods/web-a", "", nil, http.StatusOK, &pod)
	ref := metav1.GetControllerOf(&pod)
	if ref == nil || ref.UID != again.UID || ref.Kind != "DaemonSet" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Fatalf("adopted pod owners %+v", pod.OwnerReferences)
	}

	// Deleting the node deletes its pods' objects.
	h.must("DELETE", "/api/v1/nodes/a", "", nil, http.StatusOK, nil)
	h.must("GET", "/api/v1/namespaces/default/pods/web-a", "", nil, http.StatusNotFound, nil)
}

// TestWatchFanOut measures (does not assert) how long a change takes to
// reach 1000 watchers over real TCP.
func TestWatchFanOut(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 connections")
	}
	const watchers = 1000
	h := newHarness(t, nil, nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.http.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = watchers
	var chans []<-chan metav1.WatchEvent
	h.must("POST", "/api/v1/nodes", "", testNode("n"), http.StatusCreated, nil) // so that the revision is not 0
	rv := strconv.FormatInt(h.store.Revision(), 10)
	for range watchers {
		ch, resp := h.watch(ctx, "/apis/apps/v1/daemonsets?watch=1&resourceVersion="+rv, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("watch: %d", resp.StatusCode)
		}
		chans = append(chans, ch)
	}
	eventually(t, "all watchers subscribed", func() bool {
		b := h.srv.broadcasters[h.srv.daemonSets]
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.subs) == watchers
	})
	start := time.Now()
	h.must("POST", dsPath, "", testDaemonSet("fan"), http.StatusCreated, nil)
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Go(func() {
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				t.Error("a watcher got no event")
			}
		})
	}
	wg.Wait()
	t.Logf("%d watchers received the change in %v", watchers, time.Since(start))
}

func TestTLS(t *testing.T) {
	st := openStore(t, 0)
	srv, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "daemonlet-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	ts.StartTLS()
	defer ts.Close()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(ts.URL+"/api/v1/nodes", "application/json", strings.NewReader(`{"metadata":{"name":"n1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("create over TLS: %d", resp.StatusCode)
	}
}
