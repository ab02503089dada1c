// Package registrytest runs Debian's Docker registry (distribution 2.x,
// /usr/bin/docker-registry) on 127.0.0.1 for one test: plain HTTP, no
// auth, storage in the test's temporary directory.
package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// Binary is the registry executable of Debian's docker-registry package.
const Binary = "/usr/bin/docker-registry"

// startTimeout bounds how long the registry may take to answer /v2/.
const startTimeout = 20 * time.Second

// Start runs a registry for the test and returns its address
// ("127.0.0.1:<port>"); the test's cleanup stops it by pid. Without the
// binary it skips the test, or fails it under DAEMONLET_REQUIRE_INTEGRATION=1.
func Start(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		ctdtest.Unavailable(t, "docker registry (install the Debian package docker-registry, or run make deps): %v", err)
	}
	dir := t.TempDir()
	// The free port is found by binding :0 and closing it; another process
	// may take it before the registry binds, so try again a few times.
	var lastErr error
	for range 3 {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = start(t, dir, addr); lastErr == nil {
			return addr
		}
	}
	t.Fatalf("start docker registry: %v", lastErr)
	return ""
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs one registry process on addr and waits until it answers; on
// success the process is stopped in the test's cleanup.
func start(t testing.TB, dir, addr string) error {
	storage := filepath.Join(dir, "storage")
	config := filepath.Join(dir, "config.yml")
	logPath := filepath.Join(dir, "registry-"+filepath.Base(addr)+".log")
	// JSON is valid YAML; %q quotes paths safely for it.
	conf := fmt.Sprintf(`{
  "version": "0.1",
  "log": {"level": "warn", "accesslog": {"disabled": true}},
  "storage": {"filesystem": {"rootdirectory": %q}, "delete": {"enabled": true}},
  "http": {"addr": %q}
}
`, storage, addr)
	if err := os.WriteFile(config, []byte(conf), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(Binary, "serve", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// REGISTRY_* variables override the config file; give it none.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	httpc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("registry on %s exited (%v): %s", addr, cmd.ProcessState, b)
		default:
		}
		resp, err := httpc.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("registry on %s did not answer within %v (%v): %s", addr, startTimeout, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("registry log (%s):\n%s", addr, b)
		}
	})
	return nil
}
