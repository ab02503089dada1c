package ctdtest

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// RequireEnv names the environment variable that turns skips for missing
// root, binaries or daemons into failures; .ci/run sets it to 1.
const RequireEnv = "DAEMONLET_REQUIRE_INTEGRATION"

// Unavailable skips the test with the reason, or fails it when RequireEnv
// is 1, for a prerequisite of the machine that is missing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (required: %s=1)", reason, RequireEnv)
	}
	t.Skipf("%s (set %s=1 to fail instead of skipping)", reason, RequireEnv)
}

// RequireRoot skips the test, or fails it under RequireEnv=1, unless it
// runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root (euid is %d)", os.Geteuid())
	}
}

// shared is the test binary's containerd, started by the first Require.
var shared struct {
	once sync.Once
	ctd  *Containerd
	err  error
}

// Require returns the test binary's shared containerd, starting it on first
// use; without root, containerd or runc it skips (or fails under
// RequireEnv=1), and it fails the test when the daemon does not start.
func Require(t testing.TB) *Containerd {
	t.Helper()
	RequireRoot(t)
	if _, err := Binary(); err != nil {
		Unavailable(t, "%v", err)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		if _, serr := os.Stat("/usr/sbin/runc"); serr != nil {
			Unavailable(t, "runc binary (install the Debian package runc, or run make deps): %v", err)
		}
	}
	shared.once.Do(func() {
		// A short directory: the socket path must fit in 107 bytes.
		dir, err := os.MkdirTemp("", "ctd-")
		if err != nil {
			shared.err = err
			return
		}
		shared.ctd, shared.err = Start(dir)
		if shared.err != nil {
			_ = os.RemoveAll(dir)
		}
	})
	if shared.err != nil {
		t.Fatalf("start private containerd: %v", shared.err)
	}
	return shared.ctd
}

// Main runs the tests, then stops the shared containerd if a test started
// it, printing its log when the tests failed; it returns the exit code for
// os.Exit. Call it from TestMain: os.Exit(ctdtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared.ctd == nil {
		return code
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- private containerd log (%s) ---\n%s--- end of containerd log ---\n", shared.ctd.Dir, shared.ctd.Log())
	}
	if err := shared.ctd.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop private containerd: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
