package main

// The highly available end to end: three etcd members, three `daemonlet
// server` replicas on them, two agents and the CLI given every replica. The
// leader replica and an etcd member die; the API, the status controller and
// the agents carry on. The rollout controller's failover belongs to the
// rollout issue's tests, once that controller exists.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// haReplicas starts n server replicas sharing the etcd cluster under
// prefix, each knowing the nodes' tokens.
func haReplicas(t *testing.T, etcd *etcdtest.Cluster, prefix string, n int, nodes ...string) []*serverProc {
	t.Helper()
	var replicas []*serverProc
	for range n {
		s := newServer(t, nodes...)
		s.extraArgs = []string{"--etcd-servers", strings.Join(etcd.Endpoints(), ","), "--etcd-prefix", prefix}
		s.start()
		replicas = append(replicas, s)
	}
	return replicas
}

// leaderOf returns the replica whose identity holds the election's oldest
// key ("host:port/pid", see runServer).
func leaderOf(t *testing.T, cli *clientv3.Client, prefix string, replicas []*serverProc) *serverProc {
	t.Helper()
	var leader *serverProc
	waitUntil(t, 20*time.Second, "a leader replica", func() error {
		resp, err := cli.Get(context.Background(), prefix+"/leader/", clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("no candidate")
		}
		identity := string(resp.Kvs[0].Value)
		for _, s := range replicas {
			_, port, _ := strings.Cut(s.addr, ":")
			if s.cmd != nil && strings.Contains(identity, ":"+port+"/") {
				leader = s
				return nil
			}
		}
		return fmt.Errorf("leader %q is no live replica", identity)
	})
	return leader
}

// reorder returns the replicas' URLs, first first.
func reorder(first *serverProc, replicas []*serverProc) []string {
	urls := []string{first.url()}
	for _, s := range replicas {
		if s != first {
			urls = append(urls, s.url())
		}
	}
	return urls
}

func TestHighAvailability(t *testing.T) {
	etcd := etcdtest.StartCluster(t, 3)
	cli := etcd.Client(t)
	const prefix = "/registry"
	replicas := haReplicas(t, etcd, prefix, 3, "node-a", "node-b")
	leader := leaderOf(t, cli, prefix, replicas)
	// Every agent talks to the leader first, so that its death moves
	// their watches and heartbeats to another replica.
	for _, s := range replicas {
		s.urls = reorder(leader, replicas)
	}
	a := fleetNode(t, leader, "node-a")
	b := fleetNode(t, leader, "node-b")
	const ns, ds = "kube-system", "fluentd-elasticsearch"

	// Apply through one replica, read the status through every one.
	var follower *serverProc
	for _, s := range replicas {
		if s != leader {
			follower = s
		}
	}
	apply := *follower
	apply.urls = nil
	if out, err := apply.cli("apply", "-f", seedWithSelector(t)); err != nil {
		t.Fatalf("apply through a follower: %v\n%s", err, out)
	}
	for _, s := range replicas {
		only := *s
		only.urls = nil
		only.waitDS(ns, ds, 2, 2, 2)
	}
	podA := a.runningByPod()[ds+"-node-a"]
	if podA.PID == 0 {
		t.Fatalf("node-a runs no pod: %+v", a.runningByPod())
	}

	// The leader dies: the CLI, given it first, goes on through the next
	// replica, and a new leader updates the status within seconds.
	leader.stop(syscall.SIGKILL)
	if out, err := follower.cli("label", "node", "node-b", "logging-"); err != nil {
		t.Fatalf("label with the first replica dead: %v\n%s", err, out)
	}
	start := time.Now()
	follower.waitDS(ns, ds, 1, 1, 1)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the new leader took %v to update the status", took)
	}
	leaderOf(t, cli, prefix, replicas) // fails while the dead replica leads
	waitUntil(t, 30*time.Second, "node-b's pod to go", func() error {
		if got := b.runningByPod(); len(got) != 0 {
			return fmt.Errorf("node-b still runs %v", got)
		}
		return nil
	})

	// An etcd member dies: writes, status and the agents' watches go on.
	etcd.Kill(0)
	if out, err := follower.cli("label", "node", "node-b", "logging=true"); err != nil {
		t.Fatalf("label with an etcd member dead: %v\n%s", err, out)
	}
	follower.waitDS(ns, ds, 2, 2, 2)
	assertSame(t, "through both failovers", podA, a.runningByPod()[ds+"-node-a"])
	out, err := follower.cli("get", "nodes")
	if err != nil || strings.Count(out, "Ready") < 2 || strings.Contains(out, "Unknown") {
		t.Errorf("get nodes: %v\n%s", err, out)
	}

	t.Run("migrate", func(t *testing.T) { testMigrate(t, etcd, cli) })
}

// testMigrate copies a single server's bbolt store into etcd under a
// prefix of its own and serves it from a replica there.
func testMigrate(t *testing.T, etcd *etcdtest.Cluster, cli *clientv3.Client) {
	single := newServer(t, "node-a")
	single.start()
	if out, err := single.cli("apply", "-f", seedWithSelector(t)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	single.stop(syscall.SIGTERM)

	const prefix = "/migrated"
	cmd := exec.Command(single.bin, "server", "migrate", "--from-bbolt", single.dataDir,
		"--etcd-servers", strings.Join(etcd.Endpoints(), ","), "--etcd-prefix", prefix)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}

	src, err := cluster.OpenBolt(filepath.Join(single.dataDir, "cluster.db"), cluster.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kvs, _, err := src.List(context.Background(), "/")
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(context.Background(), prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, kv := range kvs {
		want = append(want, kv.Key+"="+string(kv.Value))
	}
	for _, kv := range resp.Kvs {
		got = append(got, strings.TrimPrefix(string(kv.Key), prefix)+"="+string(kv.Value))
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("etcd holds %d objects, the bbolt store %d, or they differ", len(got), len(want))
	}

	replica := haReplicas(t, etcd, prefix, 1, "node-a")[0]
	if _, err := replica.dsRow("kube-system", "fluentd-elasticsearch"); err != nil {
		t.Errorf("the migrated DaemonSet through a replica: %v", err)
	}
	// A second migration into the same prefix is refused.
	cmd = exec.Command(single.bin, "server", "migrate", "--from-bbolt", single.dataDir,
		"--etcd-servers", strings.Join(etcd.Endpoints(), ","), "--etcd-prefix", prefix)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("a second migration succeeded:\n%s", out)
	}
}
