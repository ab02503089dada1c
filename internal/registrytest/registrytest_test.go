package registrytest_test

import (
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/daemonlet/daemonlet/internal/registrytest"
)

// TestStart checks that the registry answers the distribution API's base
// endpoint on a loopback address.
func TestStart(t *testing.T) {
	addr := registrytest.Start(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("address %s is not on 127.0.0.1", addr)
	}
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Errorf("GET /v2/: %s, API version %q", resp.Status, resp.Header.Get("Docker-Distribution-Api-Version"))
	}
	resp, err = http.Get("http://" + addr + "/v2/daemonlet/absent/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("absent manifest: %s, want 404", resp.Status)
	}
}

// TestStopped checks that the cleanup stops the registry: after a subtest
// ends its address refuses connections.
func TestStopped(t *testing.T) {
	var addr string
	t.Run("run", func(t *testing.T) { addr = registrytest.Start(t) })
	if addr == "" {
		t.Skip("no registry to check")
	}
	_, err := http.Get("http://" + addr + "/v2/")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("registry still answers after cleanup: %v", err)
	}
}
