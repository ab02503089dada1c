package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// newPromptFileSource is a file source whose poll and debounce take an
// hour, so that only a read at once can deliver within a test.
func newPromptFileSource(t *testing.T, dir string) <-chan SourceUpdate {
	t.Helper()
	s := newTestFileSource(t, dir, time.Hour)
	s.debounce = time.Hour
	updates := runSource(t, s)
	if u := nextUpdate(t, updates, 5*time.Second); len(u.DaemonSets) != 0 {
		t.Fatalf("initial set = %v, want empty", updateNames(u))
	}
	return updates
}

func TestFileSourceReadsARenamedFileAtOnce(t *testing.T) {
	dir := t.TempDir()
	updates := newPromptFileSource(t, dir)
	tmp := filepath.Join(dir, ".a.yaml.tmp")
	writeManifest(t, tmp, dsYAML("a", "busybox"))
	if err := os.Rename(tmp, filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if u := nextUpdate(t, updates, 10*time.Second); !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("set = %v, want a", updateNames(u))
	}
}

// TestFileSourceWaitsForAWriteToComplete: a file written in place is not
// read while its writer holds it open, though its first document is
// already valid; closing it is read at once, whole.
func TestFileSourceWaitsForAWriteToComplete(t *testing.T) {
	dir := t.TempDir()
	updates := newPromptFileSource(t, dir)
	f, err := os.Create(filepath.Join(dir, "ab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(dsYAML("a", "busybox") + "---\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-updates:
		t.Fatalf("set %v read from a file still being written", updateNames(u))
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := f.WriteString(dsYAML("b", "busybox")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if u := nextUpdate(t, updates, 10*time.Second); !slices.Equal(updateNames(u), []string{"default/a", "default/b"}) {
		t.Fatalf("set = %v, want a and b", updateNames(u))
	}
}
