package bench_test

// Figure 4, server footprint: the RSS and CPU of a `daemonlet server`
// process with a fleet of agents watching it and heartbeating, next to the
// same server idle.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// userHZ is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on
// every Linux architecture Go supports.
const userHZ = 100

// lightHeartbeatPeriod is the light agents' heartbeat: the agent's
// default --node-status-update-frequency.
const lightHeartbeatPeriod = agent.DefaultNodeStatusUpdateFrequency

// TestBenchServerFootprint runs `daemonlet server` (bbolt, HTTPS, token
// auth) as its own process, so that what is measured is the server alone,
// and N light agents in the test process (startLightFleet: the agent's own
// ServerSource watching DaemonSets and the node's pods, a Node registered
// and its status posted every 10 s), without pods. It samples the server's VmRSS and CPU time each second over the
// window; the reference is the same server idle before the agents come.
func TestBenchServerFootprint(t *testing.T) {
	n := bench.Pick(5000, 20)
	window := bench.Pick(60*time.Second, 3*time.Second)
	idleWindow := bench.Pick(20*time.Second, 2*time.Second)
	heartbeat := lightHeartbeatPeriod
	requireFiles(t, n+256)

	srv := startServerProcess(t, t.TempDir(), n)
	admin := srv.admin
	ctx := context.Background()
	// One DaemonSet, as a fleet has, so that every DaemonSet watch starts
	// with an object.
	if _, err := admin.DaemonSets("default").Create(ctx, propagationDS(), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	idle := srv.sample(t, idleWindow)

	started := time.Now()
	startLightFleet(t, []string{srv.url}, srv.tls.CertFile, n, heartbeat, newSeenLog())
	t.Logf("%d light agents synced in %v", n, time.Since(started).Round(time.Millisecond))
	// Let the registrations' writes and first heartbeats settle.
	time.Sleep(bench.Pick(heartbeat, time.Second))
	loaded := srv.sample(t, window)

	nodes, err := admin.Nodes().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != n {
		t.Fatalf("server has %d nodes, want %d", len(nodes.Items), n)
	}
	if loaded.rssMiB <= 0 || idle.rssMiB <= 0 || loaded.cores < 0 || idle.cores < 0 {
		t.Fatalf("implausible samples: loaded %+v, idle %+v", loaded, idle)
	}
	cond := fmt.Sprintf("daemonlet server process (bbolt, HTTPS, tokens), %d light agents (ServerSource: 2 watches each; registration and a heartbeat every %v), %v window after a %v settle; reference: the same server idle over %v; %d CPUs shared",
		n, heartbeat, window, bench.Pick(heartbeat, time.Second), idleWindow, runtime.NumCPU())
	bench.Record(t, bench.Figure{
		Name: "server-footprint-rss", Value: loaded.rssMiB, Unit: "MiB",
		Reference: idle.rssMiB, ReferenceName: "idle server",
		Target: "< 1024 MiB", Met: loaded.rssMiB < 1024, Conditions: cond + "; value: the largest VmRSS sampled",
	})
	bench.Record(t, bench.Figure{
		Name: "server-footprint-cpu", Value: loaded.cores, Unit: "cores",
		Reference: idle.cores, ReferenceName: "idle server",
		Target: "< 0.5 cores", Met: loaded.cores < 0.5, Conditions: cond + "; value: CPU time / wall time over the window",
	})
}

// serverProcess is one `daemonlet server` run by the test.
type serverProcess struct {
	url   string
	cmd   *exec.Cmd
	log   string
	tls   fleetsim.TLSFiles // its certificate is also the CA file
	admin *client.Client    // fleetsim.AdminToken's
}

// startServerProcess builds daemonlet and starts its server on a free
// port, with TLS files and the tokens of the admin and of nodes nodes
// written in dir, and waits until it answers.
func startServerProcess(t testing.TB, dir string, nodes int) *serverProcess {
	t.Helper()
	tlsFiles, err := fleetsim.WriteTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokens := tokenFile(t, dir, nodes)
	bin := filepath.Join(dir, "daemonlet")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/daemonlet/daemonlet/cmd/daemonlet").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	s := &serverProcess{url: fmt.Sprintf("https://127.0.0.1:%d", port), log: logPath, tls: tlsFiles}
	if s.admin, err = client.New(client.Config{Servers: []string{s.url}, Token: fleetsim.AdminToken, CAFile: tlsFiles.CertFile}); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "server",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--data-dir", filepath.Join(dir, "data"),
		"--tls-cert-file", tlsFiles.CertFile, "--tls-private-key-file", tlsFiles.KeyFile,
		"--token-auth-file", tokens)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// By pid: this process only.
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("server log:\n%s", b)
			}
		}
	})
	c, err := client.New(client.Config{Servers: []string{s.url}, Token: fleetsim.AdminToken, CAFile: tlsFiles.CertFile, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.ServerVersion(context.Background())
		if err == nil {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("server exited: %v", s.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not answering after 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// footprint is a window's summary.
type footprint struct {
	rssMiB float64 // the largest VmRSS sampled
	cores  float64 // CPU time over wall time
}

// sample reads the server's VmRSS every second and its CPU time at both
// ends of the window.
func (s *serverProcess) sample(t testing.TB, window time.Duration) footprint {
	t.Helper()
	pid := s.cmd.Process.Pid
	cpu0, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var fp footprint
	tick := time.NewTicker(min(time.Second, window/2))
	defer tick.Stop()
	for {
		rss, err := rssKiB(pid)
		if err != nil {
			t.Fatal(err)
		}
		fp.rssMiB = max(fp.rssMiB, float64(rss)/1024)
		if time.Since(start) >= window {
			break
		}
		<-tick.C
	}
	cpu1, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	fp.cores = float64(cpu1-cpu0) / userHZ / time.Since(start).Seconds()
	return fp
}

// rssKiB is VmRSS of /proc/<pid>/status, in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// cpuTicks is utime+stime of /proc/<pid>/stat, in USER_HZ ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after its closing one start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15: 11 and 12 after state.
	utime, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return utime + stime, nil
}
