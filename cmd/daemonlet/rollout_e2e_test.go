package main

// Rollouts end to end: `daemonlet server`, several agents on the private
// containerd, and the CLI, all as the real binary. What the tests assert
// is sampled from the agents (their /pods), not from the server, so that
// a controller that believes the wrong thing cannot hide it.
//
// The liveness restart of issue 5's list is TestProbes (probes_e2e_test.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
)

// webRevision is one revision of the test's DaemonSet "web": an HTTP
// server whose readiness probe asks probePort (8080 is the served one),
// with version in its environment so that each version is a template of
// its own.
type webRevision struct {
	version     string
	probePort   int
	strategy    string // the updateStrategy, as YAML flow
	annotations string // the DaemonSet's annotations, as YAML flow
}

func (r webRevision) manifest() string {
	annotations := r.annotations
	if annotations == "" {
		annotations = "{}"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: web
  namespace: default
  annotations: %s
spec:
  selector: {matchLabels: {app: web}}
  updateStrategy: %s
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: registry.daemonlet.test/testimage:v1
        args: [serve-http, "8080"]
        env: [{name: VERSION, value: %q}]
        readinessProbe:
          httpGet: {path: /, port: %d}
          periodSeconds: 1
          failureThreshold: 1
`, annotations, r.strategy, r.version, r.probePort)
}

// applyWeb writes the revision's manifest and applies it.
func (s *serverProc) applyWeb(r webRevision) {
	s.t.Helper()
	file := filepath.Join(s.t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte(r.manifest()), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", file); err != nil {
		s.t.Fatalf("apply %s: %v\n%s", r.version, err, out)
	}
}

// rolledOut runs `rollout status` until the rollout of web completes.
func (s *serverProc) rolledOut(what string) {
	s.t.Helper()
	if out, err := s.cli("rollout", "status", "ds/web", "--timeout", "120s"); err != nil || !strings.Contains(out, "successfully rolled out") {
		s.t.Fatalf("rollout status after %s: %v\n%s", what, err, out)
	}
}

// webPods are the node's pods of the DaemonSet web that are not being
// stopped (a stopping pod is, for the controller, already deleted).
func webPods(n *node) ([]agent.PodStatus, error) {
	all, err := n.pods()
	if err != nil {
		return nil, err
	}
	var out []agent.PodStatus
	for _, p := range all {
		if p.DaemonSet == "web" && p.State != "Terminating" {
			out = append(out, p)
		}
	}
	return out, nil
}

func available(p agent.PodStatus) bool { return running(p, true) }

// waitRevision waits until every node runs exactly one pod of web, at
// revision hash and available, and returns the pods by node.
func waitRevision(t *testing.T, nodes []*node, hash, what string) map[string]agent.PodStatus {
	t.Helper()
	got := map[string]agent.PodStatus{}
	waitUntil(t, 90*time.Second, what, func() error {
		for _, n := range nodes {
			pods, err := webPods(n)
			if err != nil {
				return err
			}
			if len(pods) != 1 || !available(pods[0]) || (hash != "" && pods[0].Revision != hash) {
				return fmt.Errorf("%s runs %+v, want one available pod at %q", n.name, pods, hash)
			}
			got[n.name] = pods[0]
		}
		return nil
	})
	return got
}

// waitSettled waits until the server knows what the agents run: web's
// status counts every node's pod ready (the agents' reports arrived), and
// the rollout controller pinned every node to hash. The controller knows
// pods only from those reports: one it has not heard of is, for it, a
// missing pod, and an update made before the reports arrive moves every
// node at once, whatever the budget (reported to the lead).
func (s *serverProc) waitSettled(nodes []*node, hash string) {
	s.t.Helper()
	s.waitDS("default", "web", len(nodes), len(nodes), len(nodes))
	want := fmt.Sprintf(`"default/web":[%q]`, hash)
	waitUntil(s.t, 30*time.Second, "the nodes pinned to "+hash, func() error {
		for _, n := range nodes {
			out, err := s.cli("get", "node", n.name, "-o", "yaml")
			if err != nil {
				return err
			}
			if !strings.Contains(out, want) {
				return fmt.Errorf("%s not pinned to %s:\n%s", n.name, hash, out)
			}
		}
		return nil
	})
}

// sameRevision is the one revision all the pods run.
func sameRevision(t *testing.T, pods map[string]agent.PodStatus) string {
	t.Helper()
	hash := ""
	for node, p := range pods {
		if hash != "" && p.Revision != hash {
			t.Fatalf("nodes run different revisions: %s runs %s, another %s", node, p.Revision, hash)
		}
		hash = p.Revision
	}
	return hash
}

// sampler polls every node's /pods every 100 ms until stopped and hands
// each complete sample (pods of web by node) to check.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	// samples counts the complete samples taken.
	samples int
}

func startSampler(nodes []*node, check func(map[string][]agent.PodStatus)) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			sample := map[string][]agent.PodStatus{}
			for _, n := range nodes {
				pods, err := webPods(n)
				if err != nil {
					sample = nil // a node that did not answer: no sample
					break
				}
				sample[n.name] = pods
			}
			if sample != nil {
				check(sample)
				s.samples++
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// end stops the sampler and waits for its last check.
func (s *sampler) end() int {
	close(s.stop)
	<-s.done
	return s.samples
}

// webV1Everywhere starts a server and an agent of it on each named node,
// applies the web DaemonSet's v1 under strategy and waits until every
// node runs it, settled; it returns v1's revision.
func webV1Everywhere(t *testing.T, strategy string, names ...string) (*serverProc, []*node, string) {
	t.Helper()
	s := newServer(t, names...)
	s.start()
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, fleetNode(t, s, name))
	}
	s.applyWeb(webRevision{version: "v1", probePort: 8080, strategy: strategy})
	s.rolledOut("creating v1")
	v1 := sameRevision(t, waitRevision(t, nodes, "", "v1 on every node"))
	s.waitSettled(nodes, v1)
	return s, nodes, v1
}

// TestRolloutRollingUpdate rolls a three-node fleet through the life of a
// DaemonSet under maxUnavailable 1: a rolling update during which no two
// nodes are without an available pod at any sampled moment, `rollout
// history` and `rollout undo`, and a bad revision (its readiness probe
// asks a port nothing serves) that stalls after one node, exceeds its
// progress deadline and is rolled back automatically.
func TestRolloutRollingUpdate(t *testing.T) {
	const rolling = "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}"
	// (a) v1 everywhere.
	s, nodes, v1 := webV1Everywhere(t, rolling, "node-a", "node-b", "node-c")

	// (b) v2, sampled: at most one node without an available pod.
	var mu sync.Mutex
	worst := 0
	smp := startSampler(nodes, func(sample map[string][]agent.PodStatus) {
		down := 0
		for node, pods := range sample {
			if !slices.ContainsFunc(pods, available) {
				down++
				if down > 1 {
					t.Errorf("maxUnavailable 1: %s is the second node without an available pod: %+v", node, sample)
				}
			}
		}
		mu.Lock()
		worst = max(worst, down)
		mu.Unlock()
	})
	s.applyWeb(webRevision{version: "v2", probePort: 8080, strategy: rolling})
	s.rolledOut("updating to v2")
	v2 := sameRevision(t, waitRevision(t, nodes, "", "v2 on every node"))
	n := smp.end()
	t.Logf("v1 → v2: %d samples, at most %d node(s) unavailable at once", n, worst)
	if v2 == v1 {
		t.Fatalf("v2 runs the revision of v1, %s", v1)
	}
	if worst == 0 {
		t.Error("the sampler never saw a node without an available pod: it did not watch the rollout")
	}
	out, err := s.cli("rollout", "history", "ds/web")
	if err != nil || !strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") || strings.Contains(out, "\n3 ") {
		t.Fatalf("rollout history: want revisions 1 and 2: %v\n%s", err, out)
	}

	// (c) undo: back to v1's template, hence its hash.
	if out, err := s.cli("rollout", "undo", "ds/web"); err != nil {
		t.Fatalf("rollout undo: %v\n%s", err, out)
	}
	s.rolledOut("undo")
	waitRevision(t, nodes, v1, "v1 back on every node after undo")

	// (d) a revision that never gets ready, with a deadline and
	// auto-rollback: it may take one node (maxUnavailable 1), no more.
	var bad sync.Map // node → true once it ran a pod of the bad revision
	smp = startSampler(nodes, func(sample map[string][]agent.PodStatus) {
		for node, pods := range sample {
			for _, p := range pods {
				if p.Revision != v1 && p.Revision != v2 {
					bad.Store(node, true)
				}
			}
		}
	})
	s.applyWeb(webRevision{version: "v3-bad", probePort: 9999, strategy: rolling,
		annotations: `{daemonlet.io/progress-deadline-seconds: "8", daemonlet.io/auto-rollback: "true"}`})
	out, err = s.cli("rollout", "status", "ds/web", "--timeout", "90s")
	if err == nil || !strings.Contains(out, "exceeded its progress deadline") {
		t.Fatalf("rollout status of the bad revision: want the deadline error, got %v\n%s", err, out)
	}
	waitRevision(t, nodes, v1, "the fleet back on v1 after the automatic rollback")
	smp.end()
	stalled := 0
	bad.Range(func(any, any) bool { stalled++; return true })
	if stalled != 1 {
		t.Errorf("the bad revision reached %d nodes, want exactly 1 (maxUnavailable)", stalled)
	}
	// The condition is False only until the rollback's template update
	// starts a new rollout; the Events keep what happened.
	out, err = s.cli("describe", "ds", "web")
	if err != nil || !strings.Contains(out, "ProgressDeadlineExceeded") || !strings.Contains(out, "RolledBack") {
		t.Errorf("describe ds web: want the ProgressDeadlineExceeded and RolledBack events: %v\n%s", err, out)
	}
}

// TestRolloutSurgeAndOnDelete updates two nodes under maxSurge 1 and
// maxUnavailable 0: each node's old pod stays available until its new pod
// is (so every node always has one), both run at once on a node, and one
// pod per node remains. Then, under OnDelete, an update changes nothing
// until a pod is deleted, and only that pod's node moves.
func TestRolloutSurgeAndOnDelete(t *testing.T) {
	const surge = "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}"
	s, nodes, v1 := webV1Everywhere(t, surge, "node-a", "node-b")

	var mu sync.Mutex
	both := map[string]bool{} // nodes seen running both revisions at once
	smp := startSampler(nodes, func(sample map[string][]agent.PodStatus) {
		for node, pods := range sample {
			if !slices.ContainsFunc(pods, available) {
				t.Errorf("maxUnavailable 0: %s has no available pod of web: %+v", node, pods)
			}
			if len(pods) == 2 {
				mu.Lock()
				both[node] = true
				mu.Unlock()
			}
			if len(pods) > 2 {
				t.Errorf("maxSurge 1: %s runs %d pods of web: %+v", node, len(pods), pods)
			}
		}
	})
	s.applyWeb(webRevision{version: "v2", probePort: 8080, strategy: surge})
	s.rolledOut("updating to v2")
	pods := waitRevision(t, nodes, "", "v2 alone on every node")
	smp.end()
	v2 := sameRevision(t, pods)
	if v2 == v1 {
		t.Fatalf("v2 runs the revision of v1, %s", v1)
	}
	if len(both) == 0 {
		t.Error("no node was seen running the old and the new pod at once")
	}

	// OnDelete: the update waits for a deleted pod.
	s.applyWeb(webRevision{version: "v3", probePort: 8080, strategy: "{type: OnDelete}"})
	time.Sleep(3 * time.Second) // room for a wrong replacement to happen
	for name, p := range waitRevision(t, nodes, v2, "v2 kept under OnDelete") {
		if p.UID != pods[name].UID {
			t.Fatalf("OnDelete: %s's pod was replaced without a delete: %+v, was %+v", name, p, pods[name])
		}
	}
	a := nodes[0]
	if out, err := s.cli("delete", "pod", pods[a.name].Name); err != nil {
		t.Fatalf("delete pod: %v\n%s", err, out)
	}
	var v3 string
	waitUntil(t, 90*time.Second, a.name+" to run v3", func() error {
		got, err := webPods(a)
		if err != nil {
			return err
		}
		if len(got) != 1 || !available(got[0]) || got[0].Revision == v2 {
			return fmt.Errorf("%s runs %+v", a.name, got)
		}
		v3 = got[0].Revision
		return nil
	})
	if v3 == v1 {
		t.Fatalf("v3 runs the revision of v1, %s", v1)
	}
	b := nodes[1]
	got, err := webPods(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UID != pods[b.name].UID {
		t.Fatalf("OnDelete: %s, whose pod was not deleted, moved: %+v, was %+v", b.name, got, pods[b.name])
	}
}
