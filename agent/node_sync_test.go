package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemTotalAndOSImage(t *testing.T) {
	dir := t.TempDir()
	meminfo := filepath.Join(dir, "meminfo")
	if err := os.WriteFile(meminfo, []byte("MemFree:  10 kB\nMemTotal:       16318652 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kib, err := memTotalKiB(meminfo); err != nil || kib != 16318652 {
		t.Errorf("memTotalKiB = %d, %v; want 16318652", kib, err)
	}
	if err := os.WriteFile(meminfo, []byte("MemFree: 10 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := memTotalKiB(meminfo); err == nil {
		t.Error("memTotalKiB without MemTotal succeeded")
	}
	osRelease := filepath.Join(dir, "os-release")
	if err := os.WriteFile(osRelease, []byte("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := osImage(osRelease); got != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("osImage = %q", got)
	}
	if got := osImage(filepath.Join(dir, "missing")); got != "Unknown" {
		t.Errorf("osImage of a missing file = %q, want Unknown", got)
	}
}
