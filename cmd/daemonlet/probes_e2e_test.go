package main

import (
	"strings"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
)

// probedDS serves HTTP on a named port with a readiness probe on PATH.
const probedDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: NAME, namespace: default}
spec:
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: registry.daemonlet.test/testimage:v1
        args: [serve-http, "8080"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: PATH, port: http}
          periodSeconds: 1
          failureThreshold: 1
`

// unhealthyDS runs a container whose exec liveness probe always fails.
const unhealthyDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: unhealthy, namespace: default}
spec:
  selector: {matchLabels: {app: unhealthy}}
  template:
    metadata: {labels: {app: unhealthy}}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
      - name: main
        image: registry.daemonlet.test/testimage:v1
        args: [sleep]
        livenessProbe:
          exec: {command: [/testimage, exit, "1"]}
          periodSeconds: 1
          failureThreshold: 2
          terminationGracePeriodSeconds: 3
`

// TestProbes runs the three probe DaemonSets on one agent: an httpGet
// readiness probe answered 500 keeps its pod 0/1 ready while the one
// answered 200 makes its pod 1/1, and a failing exec liveness probe
// restarts its container, under the crash back-off.
func TestProbes(t *testing.T) {
	n := newNode(t, "")
	n.manifest("unready.yaml", strings.NewReplacer("NAME", "unready", "PATH", "/status/500").Replace(probedDS))
	n.manifest("ready.yaml", strings.NewReplacer("NAME", "ready", "PATH", "/").Replace(probedDS))
	n.manifest("unhealthy.yaml", unhealthyDS)
	n.start()

	n.waitPods(90*time.Second, "the pod probed on / to be ready", func(p map[string]agent.PodStatus) bool {
		r, ok := p["ready"]
		return running(r, ok)
	})
	// By now the other pod's probe has run at least as often, and a few
	// seconds more leave it many chances to be wrong.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		p := n.waitPods(10*time.Second, "the pod probed on /status/500 to run", func(p map[string]agent.PodStatus) bool {
			u, ok := p["unready"]
			return ok && u.Phase == "Running" && u.Total == 1
		})
		if u := p["unready"]; u.Ready != 0 || u.Restarts != 0 {
			t.Fatalf("pod whose readiness probe gets 500: %d/%d ready, %d restarts", u.Ready, u.Total, u.Restarts)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A readiness failure restarts nothing.
	if c, ok := n.runningByPod()["unready-"+n.name]; !ok || c.Attempt != 0 {
		t.Fatalf("unready pod's container: %+v (running %v), want attempt 0 running", c, ok)
	}

	// Two failures a second apart kill the container (with the probe's
	// 3s grace; SIGTERM ends the test program at once) and restart it at
	// once; the next kill meets the 10s back-off.
	p := n.waitPods(60*time.Second, "the unhealthy pod to restart twice", func(p map[string]agent.PodStatus) bool {
		return p["unhealthy"].Restarts >= 2
	})
	if u := p["unhealthy"]; u.Phase != "Running" {
		t.Fatalf("unhealthy pod %+v", u)
	}
}
