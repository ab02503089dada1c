package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
	"github.com/daemonlet/daemonlet/store/cluster/clustertest"
)

// openEtcd opens a store on the cluster's endpoints under prefix, closed
// in t.Cleanup.
func openEtcd(t *testing.T, endpoints []string, prefix string) *cluster.Etcd {
	t.Helper()
	s, err := cluster.OpenEtcd(cluster.EtcdConfig{
		Endpoints:    endpoints,
		Prefix:       prefix,
		HistoryLimit: clustertest.HistoryLimit,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("OpenEtcd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestEtcdConformance runs the shared suite against a 3-member cluster, one
// Prefix per subtest. The suite wants a new store per subtest, and a store
// on a cluster whose history was compacted is not new: a watch from
// revision 0 is rightly ErrCompacted there. So once a subtest has compacted
// the shared cluster, later subtests each get a fresh cluster.
func TestEtcdConformance(t *testing.T) {
	shared := etcdtest.StartCluster(t, 3)
	probe := shared.Client(t)
	n := 0
	clustertest.Run(t, func(st *testing.T) cluster.Store {
		n++
		c := shared
		if compacted(st, probe) {
			c = etcdtest.StartCluster(st, 3)
		}
		return openEtcd(st, c.Endpoints(), fmt.Sprintf("/conformance-%03d", n))
	})
}

// compacted tells whether the cluster has dropped any history.
func compacted(t *testing.T, cli *clientv3.Client) bool {
	t.Helper()
	_, err := cli.Get(t.Context(), "/", clientv3.WithRev(1), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return true
	case err != nil:
		t.Fatalf("read revision 1: %v", err)
	}
	return false
}

// TestEtcdCloseEndsWatchers checks that Close closes every watch channel.
func TestEtcdCloseEndsWatchers(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	s, err := cluster.OpenEtcd(cluster.EtcdConfig{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	var chans []<-chan cluster.Event
	for range 3 {
		ch, err := s.Watch(t.Context(), "/", s.Revision())
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		select {
		case ev, ok := <-ch:
			if ok {
				t.Errorf("watch %d delivered %v after Close", i, ev)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("watch %d still open 10s after Close", i)
		}
	}
	if _, err := s.Watch(t.Context(), "/", 0); !errdefs.IsUnavailable(err) {
		t.Errorf("Watch after Close error = %v, want Unavailable", err)
	}
}

func TestEtcdOpenUnreachable(t *testing.T) {
	_, err := cluster.OpenEtcd(cluster.EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond})
	if !errdefs.IsUnavailable(err) {
		t.Errorf("OpenEtcd of a closed port error = %v, want Unavailable", err)
	}
	if _, err := cluster.OpenEtcd(cluster.EtcdConfig{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("OpenEtcd without endpoints error = %v, want InvalidArgument", err)
	}
}

// TestEtcdPrefix checks that keys are stored under the Prefix, where
// kube-apiserver's layout puts them, and that stores with different
// prefixes do not see each other's keys.
func TestEtcdPrefix(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	a := openEtcd(t, c.Endpoints(), "/registry/")
	b := openEtcd(t, c.Endpoints(), "/other")
	ctx := t.Context()
	if _, err := a.Create(ctx, "/pods/ns/p", []byte("pod")); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Client(t).Get(ctx, "/registry/pods/ns/p")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "pod" {
		t.Errorf("etcd key /registry/pods/ns/p = %v, %v; want the pod", resp, err)
	}
	if kvs, _, err := b.List(ctx, ""); err != nil || len(kvs) != 0 {
		t.Errorf("store /other lists %v, %v; want nothing", kvs, err)
	}
}

// TestEtcdFailover kills each member in turn, so that one of the kills hits
// the member serving the watch, while a writer keeps creating keys through
// a client that knows every endpoint: the writes must go on, and the watcher
// must see every create exactly once, in order. A write whose outcome a kill
// made unknown is retried and, if it had landed, read back. If etcd ends the
// watch (WithRequireLeader does, when its member loses the leader), the
// watcher resumes from its last revision as the Store contract tells callers.
func TestEtcdFailover(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	s := openEtcd(t, c.Endpoints(), "/failover")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var (
		mu       sync.Mutex
		revs     []int64 // revision of each create, by key index
		received []cluster.Event
		resumes  int
	)
	start := s.Revision()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		last := start
		for watchCtx.Err() == nil {
			ch, err := s.Watch(watchCtx, "/k/", last)
			if err != nil {
				if watchCtx.Err() == nil {
					t.Errorf("watch from %d: %v", last, err)
				}
				return
			}
			for ev := range ch {
				mu.Lock()
				received = append(received, ev)
				mu.Unlock()
				last = ev.Revision
			}
			mu.Lock()
			resumes++
			mu.Unlock()
		}
	}()

	write := func(i int) {
		key := fmt.Sprintf("/k/%04d", i)
		deadline := time.Now().Add(20 * time.Second)
		for {
			rev, err := s.Create(ctx, key, []byte("v"))
			if errdefs.IsAlreadyExists(err) {
				// An earlier attempt landed before its answer was lost.
				var kv cluster.KV
				kv, err = s.Get(ctx, key)
				rev = kv.CreateRevision
			}
			if err == nil {
				mu.Lock()
				revs = append(revs, rev)
				mu.Unlock()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("create %s: still failing after 20s: %v", key, err)
			}
			t.Logf("create %s: %v (retrying)", key, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	i := 0
	for member := range 3 {
		for range 20 {
			write(i)
			i++
		}
		c.Kill(member)
		for range 20 {
			write(i)
			i++
		}
		c.Restart(member)
	}

	want := slices.Clone(revs)
	slices.Sort(want)
	deadline := time.After(20 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("watcher received %d of %d creates", n, len(want))
		case <-time.After(50 * time.Millisecond):
		}
	}
	stopWatch()
	<-watched
	var got []int64
	for _, ev := range received {
		if ev.Type != cluster.EventPut {
			t.Errorf("unexpected event %v %s", ev.Type, ev.KV.Key)
		}
		got = append(got, ev.Revision)
	}
	if !slices.Equal(got, want) {
		t.Errorf("watched revisions %v\nwant %v", got, want)
	}
	// The last resume is the stop above.
	t.Logf("%d writes, %d watch resumes", len(want), resumes-1)
}
