package main

// `make demo` and `make demo-down` as a new user runs them: scripts/demo.sh
// with a demo directory, ports and bridge of the test's own, then
// scripts/demo-down.sh, after which nothing of the demo may be left.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

func TestDemoUpAndDown(t *testing.T) {
	ctdtest.RequireRoot(t)
	if _, err := ctdtest.Binary(); err != nil {
		ctdtest.Unavailable(t, "%v", err)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	tok := token()
	bridge := "dldemo" + tok
	serverPort, exporterPort := freePort(t), freePort(t)
	args := []string{"-dir", dir, "-bridge", bridge,
		"-pod-cidr", fmt.Sprintf("10.238.%d.0/24", int(tok[0])%200+20),
		"-server-port", strconv.Itoa(serverPort), "-healthz-port", strconv.Itoa(freePort(t)),
		"-metrics-port", strconv.Itoa(freePort(t)), "-exporter-port", strconv.Itoa(exporterPort),
		"-node", "demo-" + tok,
	}
	script := func(name string) (string, error) {
		cmd := exec.Command("../../scripts/"+name, args...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err == nil {
			if out, err := script("demo-down.sh"); err != nil {
				t.Errorf("cleanup: demo-down.sh: %v\n%s", err, out)
			}
		}
	})

	out, err := script("demo.sh")
	if err != nil {
		for _, log := range []string{"democtl.log", "server.log", "agent.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, log)); err == nil {
				t.Logf("%s:\n%s", log, b)
			}
		}
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	t.Logf("demo.sh:\n%s", out)
	// `get ds -A`: NAMESPACE NAME DESIRED CURRENT READY ...
	for _, ds := range []string{"node-exporter", "log-shipper"} {
		if !hasRow(out, func(f []string) bool { return len(f) > 4 && f[1] == ds && f[2] == "1" && f[4] == "1" }) {
			t.Errorf("the output shows no ready %s", ds)
		}
	}
	for _, want := range []string{"-o wide", "/metrics", "prometheus.token", "admin.token"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if body, err := get(fmt.Sprintf("http://127.0.0.1:%d/", exporterPort), ""); err != nil || body != "ok" {
		t.Errorf("node-exporter example: %q, %v", body, err)
	}
	promToken, err := os.ReadFile(filepath.Join(dir, "prometheus.token"))
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", serverPort), string(promToken))
	if err != nil || !strings.Contains(metrics, `daemonlet_daemonset_status_number_ready{daemonset="log-shipper",namespace="logging"} 1`) {
		t.Errorf("server metrics with the printed token: %v\n%s", err, metrics)
	}

	// What must be gone afterwards: the supervisor and the daemons, by pid.
	var pids []int
	for _, f := range []string{"democtl.pid", "pids"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for w := range strings.FieldsSeq(string(b)) {
			if p, err := strconv.Atoi(w); err == nil && p > 0 {
				pids = append(pids, p)
			}
		}
	}
	if len(pids) != 4 {
		t.Fatalf("pids %v: want the supervisor, containerd, the server and the agent", pids)
	}

	if out, err := script("demo-down.sh"); err != nil {
		t.Fatalf("demo-down.sh: %v\n%s", err, out)
	}
	for _, p := range pids {
		if processRuns(p) {
			t.Errorf("pid %d still runs after demo-down", p)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo directory is left (%v)", err)
	}
	if _, err := os.Stat("/sys/class/net/" + bridge); !os.IsNotExist(err) {
		t.Errorf("bridge %s is left (%v)", bridge, err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if p := processesMentioning(t, dir); len(p) > 0 {
		t.Errorf("processes left: %v", p)
	}
}

func hasRow(out string, match func([]string) bool) bool {
	for _, line := range strings.Split(out, "\n") {
		if match(strings.Fields(line)) {
			return true
		}
	}
	return false
}

// get fetches url with an optional bearer token and returns the body.
func get(url, token string) (string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

// processRuns reports whether pid exists and is not a zombie (the
// supervisor's reaper may not have collected it yet).
func processRuns(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			out = append(out, fields[4])
		}
	}
	return out
}

// processesMentioning lists live processes whose command line names dir.
func processesMentioning(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !processRuns(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	return out
}
