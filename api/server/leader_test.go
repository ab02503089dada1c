package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// grantedElector is an Elector whose leadership the test grants and
// revokes, to run two servers on one store as two replicas would.
type grantedElector struct {
	mu       sync.Mutex
	granted  chan struct{} // closed while the test grants leadership
	leading  chan struct{} // closed when the current term ends
	resigned bool
}

var _ cluster.Elector = (*grantedElector)(nil)

func newGrantedElector() *grantedElector {
	leading := make(chan struct{})
	close(leading)
	return &grantedElector{granted: make(chan struct{}), leading: leading}
}

func (e *grantedElector) Campaign(ctx context.Context) error {
	e.mu.Lock()
	granted := e.granted
	e.mu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-granted:
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.leading = make(chan struct{})
	return nil
}

func (e *grantedElector) Leading() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

func (e *grantedElector) Resign(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resigned = true
	return nil
}

// grant lets the next Campaign win.
func (e *grantedElector) grant() {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(e.granted)
}

// revoke ends the current term, as a lost etcd session does, and makes the
// next Campaign wait for another grant.
func (e *grantedElector) revoke() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.granted = make(chan struct{})
	close(e.leading)
}

func (e *grantedElector) wasResigned() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resigned
}

func TestOnlyTheLeaderRunsControllers(t *testing.T) {
	st := openStore(t, 0)
	ea, eb := newGrantedElector(), newGrantedElector()
	ea.grant()
	a := serveHarness(t, Config{Store: st, Elector: ea})
	b := serveHarness(t, Config{Store: st, Elector: eb})
	ds := testDaemonSet("web")
	a.must("POST", dsPath, "", ds, http.StatusCreated, nil)
	b.must("POST", "/api/v1/nodes", "", testNode("n1"), http.StatusCreated, nil)
	desired := func(h *harness) int32 {
		var got appsv1.DaemonSet
		h.must("GET", dsPath+"/web", "", nil, http.StatusOK, &got)
		return got.Status.DesiredNumberScheduled
	}
	eventually(t, "the leader a syncs status", func() bool { return desired(b) == 1 })

	ea.revoke()
	// No replica leads: a change must stay without a status sync, for
	// longer than the status controller's debounce.
	a.must("POST", "/api/v1/nodes", "", testNode("n2"), http.StatusCreated, nil)
	time.Sleep(10 * statusDebounce)
	if got := desired(a); got != 1 {
		t.Fatalf("status synced without a leader: desired %d", got)
	}
	eb.grant()
	eventually(t, "the new leader b syncs status", func() bool { return desired(a) == 2 })
}

func TestRunResignsOnExit(t *testing.T) {
	e := newGrantedElector()
	e.grant()
	srv, err := New(Config{Store: openStore(t, 0), Elector: e})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	eventually(t, "leading", func() bool {
		select {
		case <-e.Leading():
			return false
		default:
			return true
		}
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !e.wasResigned() {
		t.Error("Run ended without resigning")
	}
}

func TestHeartbeatsReachTheLeaderThroughTheStore(t *testing.T) {
	st := openStore(t, 0)
	clk := clocktesting.NewFakeClock(time.Now())
	leader := newGrantedElector()
	leader.grant()
	// Agents talk to the follower only; the leader runs the node monitor.
	follower := serveHarness(t, Config{Store: st, Elector: newGrantedElector(), Clock: clk, HeartbeatWriteInterval: DefaultNodeMonitorGracePeriod / 2})
	serveHarness(t, Config{Store: st, Elector: leader, Clock: clk})

	n := testNode("n1")
	n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(clk.Now())
	follower.must("POST", "/api/v1/nodes", "", n, http.StatusCreated, n)
	heartbeat := func() {
		n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(clk.Now())
		n.ResourceVersion = ""
		follower.must("PUT", "/api/v1/nodes/n1/status", "", n, http.StatusOK, nil)
	}
	ready := func() corev1.ConditionStatus {
		var cur corev1.Node
		follower.must("GET", "/api/v1/nodes/n1", "", nil, http.StatusOK, &cur)
		return cur.Status.Conditions[0].Status
	}

	// Heartbeats every quarter grace period: only every other one is
	// written, and the leader never sees the node silent.
	period := DefaultNodeMonitorGracePeriod / 4
	rev := st.Revision()
	for range 12 {
		clk.Step(period)
		heartbeat()
		// Give the leader's monitor time to run on the stepped clock.
		time.Sleep(20 * time.Millisecond)
		if got := ready(); got != corev1.ConditionTrue {
			t.Fatalf("node %s while its heartbeats reach a follower", got)
		}
	}
	if writes := st.Revision() - rev; writes < 5 || writes > 7 {
		t.Errorf("12 heartbeats wrote %d times, want 6", writes)
	}

	eventually(t, "Ready=Unknown after the heartbeats stop", func() bool {
		clk.Step(period)
		return ready() == corev1.ConditionUnknown
	})
}

func TestNegativeHeartbeatWriteInterval(t *testing.T) {
	_, err := New(Config{Store: openStore(t, 0), HeartbeatWriteInterval: -time.Second})
	if err == nil {
		t.Fatal("New accepted a negative heartbeat write interval")
	}
}

func TestWatchResumesOnAnotherReplica(t *testing.T) {
	st := openStore(t, 0)
	// Neither replica leads, so that no status write adds events.
	a := serveHarness(t, Config{Store: st, Elector: newGrantedElector()})
	b := serveHarness(t, Config{Store: st, Elector: newGrantedElector()})
	var list appsv1.DaemonSetList
	a.must("GET", dsPath, "", nil, http.StatusOK, &list)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chA, _ := a.watch(ctx, dsPath+"?watch=1&resourceVersion="+list.ResourceVersion, "")
	for _, name := range []string{"d1", "d2", "d3"} {
		a.must("POST", dsPath, "", testDaemonSet(name), http.StatusCreated, nil)
	}
	var last string
	for range 2 {
		_, meta := next(t, chA)
		last = meta.ResourceVersion
	}
	// Replica a goes away after two events; the watcher resumes on b from
	// the last version it got, while writes go on through b.
	a.http.CloseClientConnections()
	b.must("DELETE", dsPath+"/d1", "", nil, http.StatusOK, nil)
	chB, _ := b.watch(ctx, dsPath+"?watch=1&resourceVersion="+last, "")
	var got []string
	for range 2 {
		typ, meta := next(t, chB)
		got = append(got, typ+" "+meta.Name)
	}
	if want := []string{"ADDED d3", "DELETED d1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("resumed events %v, want %v", got, want)
	}
	select {
	case ev := <-chB:
		t.Errorf("an extra event %s", ev.Type)
	case <-time.After(300 * time.Millisecond):
	}
}
