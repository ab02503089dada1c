package main

// End-to-end tests of ConfigMaps and Secrets (issue 6), with the real
// binary on the private containerd: in static mode the objects sit beside
// their DaemonSets in --pod-manifest-path and no server runs; in server mode
// they are applied to `daemonlet server` and the agent watches them.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/runtime"
)

// configMapDoc is a ConfigMap holding one file, app.conf.
func configMapDoc(name, content string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: %s, namespace: default}
data:
  app.conf: %q
`, name, content)
}

// secretDoc is a Secret holding one key, token, as stringData.
const secretDoc = `apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: default}
stringData: {token: e2e-s3cret}
`

// configuredDS is a fluent-bit-style DaemonSet: its configuration is a
// ConfigMap volume, its credentials a Secret volume and a Secret env.
const configuredDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: shipper, namespace: default}
spec:
  selector: {matchLabels: {app: shipper}}
  template:
    metadata: {labels: {app: shipper}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes:
      - {name: conf, configMap: {name: shipper-conf}}
      - {name: creds, secret: {secretName: creds, defaultMode: 0400}}
      containers:
      - name: main
        image: registry.daemonlet.test/testimage:v1
        args: [cat, /etc/shipper/app.conf, print-env, sleep]
        env:
        - name: TOKEN
          valueFrom: {secretKeyRef: {name: creds, key: token}}
        volumeMounts:
        - {name: conf, mountPath: /etc/shipper}
        - {name: creds, mountPath: /var/run/creds}
`

// podLog returns the first attempt's log of the pod's main container.
func (n *node) podLog(podName string) string {
	n.t.Helper()
	matches, _ := filepath.Glob(filepath.Join(n.dir, "pod-logs", "default_"+podName+"_*", "main", "0.log"))
	if len(matches) != 1 {
		return ""
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		n.t.Fatal(err)
	}
	return string(b)
}

// exec runs the test program in a running container and returns its output.
func (n *node) exec(id string, args ...string) (string, error) {
	rt, err := n.runtime()
	if err != nil {
		return "", err
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, err := rt.Exec(ctx, id, append([]string{"/testimage"}, args...))
	if err == nil && code != 0 {
		err = fmt.Errorf("exit code %d: %s", code, out)
	}
	return string(out), err
}

// isTmpfs says whether path is a tmpfs mount point in this mount namespace.
func isTmpfs(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && fields[1] == path {
			return fields[2] == "tmpfs"
		}
	}
	return false
}

// TestStaticConfigMapAndSecret runs a DaemonSet whose ConfigMap and Secret
// are documents beside it: the container reads the file and the env, the
// Secret volume is a tmpfs, and an edit of the ConfigMap rewrites the file
// in the running container within seconds without restarting it.
func TestStaticConfigMapAndSecret(t *testing.T) {
	n := newNode(t, "")
	n.manifest("shipper.yaml", configMapDoc("shipper-conf", "level=info")+"---\n"+secretDoc+"---\n"+configuredDS)
	n.start()
	n.waitPods(90*time.Second, "shipper to run", func(p map[string]agent.PodStatus) bool {
		s, ok := p["shipper"]
		return running(s, ok)
	})
	var log string
	waitUntil(t, 10*time.Second, "the pod log to show the file and the env", func() error {
		log = n.podLog("shipper-e2e-node")
		if !strings.Contains(log, "level=info") || !strings.Contains(log, "TOKEN=e2e-s3cret") {
			return fmt.Errorf("pod log %q", log)
		}
		return nil
	})
	before := n.runningByPod()["shipper-e2e-node"]

	sbDir := filepath.Join(n.root, "pods", before.PodUID)
	if !isTmpfs(t, filepath.Join(sbDir, "volumes", "creds")) {
		t.Errorf("the Secret volume %s is not a tmpfs", filepath.Join(sbDir, "volumes", "creds"))
	}
	if fi, err := os.Stat(filepath.Join(sbDir, "volumes", "creds", "token")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("secret file: %v, %v; want mode 0400", fi, err)
	}

	// The agent keeps the Secret for offline restarts, sealed: state.db
	// holds neither the value nor its base64 form.
	if db, err := os.ReadFile(filepath.Join(n.root, "state.db")); err != nil {
		t.Error(err)
	} else if bytes.Contains(db, []byte("e2e-s3cret")) || bytes.Contains(db, []byte(base64.StdEncoding.EncodeToString([]byte("e2e-s3cret")))) {
		t.Error("state.db holds the Secret's value unencrypted")
	}

	n.manifest("shipper.yaml", configMapDoc("shipper-conf", "level=debug")+"---\n"+secretDoc+"---\n"+configuredDS)
	waitUntil(t, 15*time.Second, "the container to see the new file", func() error {
		out, err := n.exec(before.ID, "cat", "/etc/shipper/app.conf")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "level=debug") {
			return fmt.Errorf("file reads %q", out)
		}
		return nil
	})
	after := n.runningByPod()["shipper-e2e-node"]
	if after.ID != before.ID || after.PID != before.PID {
		t.Errorf("the update restarted the container: before %s pid %d, after %s pid %d", before.ID, before.PID, after.ID, after.PID)
	}
}

// missingConfigDS mounts a ConfigMap that does not exist yet.
const missingConfigDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: late, namespace: default}
spec:
  selector: {matchLabels: {app: late}}
  template:
    metadata: {labels: {app: late}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes:
      - {name: conf, configMap: {name: late-conf}}
      containers:
      - name: main
        image: registry.daemonlet.test/testimage:v1
        args: [cat, /etc/late/app.conf, sleep]
        volumeMounts:
        - {name: conf, mountPath: /etc/late}
`

// TestMissingConfigMapThenApplied holds a pod in CreateContainerConfigError
// naming its missing ConfigMap, and starts it once the ConfigMap is added
// as a file of its own.
func TestMissingConfigMapThenApplied(t *testing.T) {
	n := newNode(t, "")
	n.manifest("late.yaml", missingConfigDS)
	n.start()
	pods := n.waitPods(60*time.Second, "CreateContainerConfigError", func(p map[string]agent.PodStatus) bool {
		return p["late"].Reason == "CreateContainerConfigError"
	})
	if msg := pods["late"].Message; !strings.Contains(msg, `configmap "late-conf" not found`) {
		t.Errorf("message %q does not name the ConfigMap", msg)
	}
	for _, c := range n.containers() {
		if c.PodName == "late-e2e-node" {
			t.Errorf("container %s created without its ConfigMap", c.ID)
		}
	}

	n.manifest("late-conf.yaml", configMapDoc("late-conf", "arrived"))
	n.waitPods(30*time.Second, "late to run", func(p map[string]agent.PodStatus) bool {
		s, ok := p["late"]
		return running(s, ok)
	})
	waitUntil(t, 10*time.Second, "the pod log to show the file", func() error {
		if log := n.podLog("late-e2e-node"); !strings.Contains(log, "arrived") {
			return fmt.Errorf("pod log %q", log)
		}
		return nil
	})
	if c := n.runningByPod()["late-e2e-node"]; c.State != runtime.StateRunning {
		t.Errorf("container %+v", c)
	}
}

// TestServerConfigMap runs a DaemonSet whose ConfigMap volume and Secret env
// come from the server: the pod reads both, an update of the ConfigMap
// reaches the running container without a restart.
func TestServerConfigMap(t *testing.T) {
	s := newServer(t, "node-a")
	s.start()
	a := fleetNode(t, s, "node-a")
	p := filepath.Join(t.TempDir(), "shipper.yaml")
	write := func(level string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(configMapDoc("shipper-conf", level)+"---\n"+secretDoc+"---\n"+configuredDS), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := s.cli("apply", "-f", p); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
	}
	write("level=info")
	s.waitDS("default", "shipper", 1, 1, 1)
	waitUntil(t, 30*time.Second, "the pod log to show the file and the env", func() error {
		if log := a.podLog("shipper-node-a"); !strings.Contains(log, "level=info") || !strings.Contains(log, "TOKEN=e2e-s3cret") {
			return fmt.Errorf("pod log %q", log)
		}
		return nil
	})
	before := a.runningByPod()["shipper-node-a"]
	write("level=debug")
	waitUntil(t, 15*time.Second, "the container to see the new file", func() error {
		out, err := a.exec(before.ID, "cat", "/etc/shipper/app.conf")
		if err == nil && !strings.Contains(out, "level=debug") {
			err = fmt.Errorf("file reads %q", out)
		}
		return err
	})
	if after := a.runningByPod()["shipper-node-a"]; after.ID != before.ID || after.PID != before.PID {
		t.Errorf("the update restarted the container: %+v, then %+v", before, after)
	}
}
