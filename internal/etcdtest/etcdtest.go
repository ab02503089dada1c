// Package etcdtest starts real etcd clusters (Debian's /usr/bin/etcd) on
// 127.0.0.1 for tests of the etcd backend of the server's storage: a member
// is a child process of the test binary with its data in t.TempDir(), so
// that tests can kill and restart members to exercise failover.
package etcdtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// Binary is the etcd server the clusters run; scripts/deps.sh installs it
// (Debian package etcd-server).
const Binary = "/usr/bin/etcd"

// startTimeout bounds the wait for a cluster, or a restarted member, to
// report itself healthy.
const startTimeout = 30 * time.Second

// Cluster is a running etcd cluster whose members the test can kill and
// restart; t.Cleanup stops every member.
type Cluster struct {
	t       testing.TB
	members []*member
}

// member is one etcd process and what it needs to be started again.
type member struct {
	name      string
	dataDir   string
	logPath   string
	clientURL string
	peerURL   string
	// mu guards cmd and exited, which Kill, Restart and the cleanup change.
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartCluster starts a cluster of members etcd processes listening on free
// 127.0.0.1 ports and returns once every member is healthy. It skips the
// test when the etcd binary is missing (fails under DAEMONLET_REQUIRE_INTEGRATION=1).
func StartCluster(t testing.TB, members int) *Cluster {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		ctdtest.Unavailable(t, "etcd server not installed (%v): run scripts/deps.sh", err)
	}
	if members < 1 {
		t.Fatalf("etcdtest: cluster of %d members", members)
	}
	dir := t.TempDir()
	c := &Cluster{t: t}
	var initial []string
	for i := range members {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d.etcd", i)),
			logPath:   filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
			clientURL: "http://" + freeAddr(t),
			peerURL:   "http://" + freeAddr(t),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	t.Cleanup(c.stopAll)
	for _, m := range c.members {
		if err := m.start(strings.Join(initial, ",")); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
	}
	for i := range c.members {
		c.waitHealthy(i)
	}
	return c
}

// freeAddr returns a 127.0.0.1 address with a port the kernel just handed
// out, so that concurrent test binaries do not collide on fixed ports.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs the member's etcd; initialCluster is only read when the data
// directory is new, so that a restart rejoins with its existing identity.
func (m *member) start(initialCluster string) error {
	logFile, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log of member %s: %w", m.name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(Binary,
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "etcdtest",
		// Short raft timings so that failover tests elect a new leader
		// within a second instead of etcd's production defaults.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Pdeathsig kills the member if the test binary dies without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in the member's log
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	return nil
}

// stop ends the member's process, gracefully first, and waits for it;
// a member that is not running is left alone.
func (m *member) stop(sig syscall.Signal) {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd, m.exited = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig) // fails only if it already exited
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// stopAll stops every member and prints their logs if the test failed.
func (c *Cluster) stopAll() {
	for _, m := range c.members {
		m.stop(syscall.SIGTERM)
	}
	if !c.t.Failed() {
		return
	}
	for _, m := range c.members {
		data, err := os.ReadFile(m.logPath)
		if err != nil {
			c.t.Logf("etcd member %s: no log: %v", m.name, err)
			continue
		}
		c.t.Logf("etcd member %s log:\n%s", m.name, data)
	}
}

// waitHealthy polls the member's /health endpoint until it reports a
// cluster with a leader.
func (c *Cluster) waitHealthy(i int) {
	c.t.Helper()
	m := c.members[i]
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		m.mu.Lock()
		exited := m.exited
		m.mu.Unlock()
		select {
		case <-exited:
			c.t.Fatalf("etcdtest: member %s exited while starting", m.name)
		default:
		}
		if last = healthy(client, m.clientURL); last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("etcdtest: member %s not healthy within %s: %v", m.name, startTimeout, last)
}

// healthy asks one member's /health endpoint, which answers true only when
// the member sees a leader and can serve a linearizable read.
func healthy(client *http.Client, url string) error {
	resp, err := client.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Health string `json:"health"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("decode /health (HTTP %d): %w", resp.StatusCode, err)
	}
	if body.Health != "true" {
		return errors.New("/health answered " + body.Health)
	}
	return nil
}

// Endpoints returns the client URLs of all members, killed ones included,
// as a client configured with the whole cluster would know them.
func (c *Cluster) Endpoints() []string {
	urls := make([]string, len(c.members))
	for i, m := range c.members {
		urls[i] = m.clientURL
	}
	return urls
}

// Endpoint returns the client URL of member i, for a client that must talk
// to that member first.
func (c *Cluster) Endpoint(i int) string {
	return c.members[i].clientURL
}

// Kill stops member i with SIGKILL, as a crash would, and waits for the
// process to exit.
func (c *Cluster) Kill(i int) {
	c.members[i].stop(syscall.SIGKILL)
}

// Restart starts member i again on its data directory and ports, after
// Kill, and waits until it is healthy.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	m.stop(syscall.SIGTERM)
	// The data directory already names the cluster; etcd ignores the
	// initial cluster flags when it exists, but they must still parse.
	var initial []string
	for _, o := range c.members {
		initial = append(initial, o.name+"="+o.peerURL)
	}
	if err := m.start(strings.Join(initial, ",")); err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
	c.waitHealthy(i)
}

// Client returns a client of the whole cluster, closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}
