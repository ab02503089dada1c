package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// testOptions routes the store's log to the test's output.
func testOptions(t *testing.T) Options {
	t.Helper()
	return Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
}

// openTest opens a store at path and closes it when the test ends.
func openTest(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// rawUpdate edits a closed store file with plain bbolt, to build files that
// the store's API refuses to write.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open(%s): %v", path, err)
	}
	defer bdb.Close()
	if err := bdb.Update(fn); err != nil {
		t.Fatalf("raw update of %s: %v", path, err)
	}
}

// rawVersion reads the schema version of a closed store file.
func rawVersion(t *testing.T, path string) int {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bolt.Open(%s): %v", path, err)
	}
	defer bdb.Close()
	return versionOf(t, bdb)
}

// versionOf reads the schema version of an open bbolt file.
func versionOf(t *testing.T, bdb *bolt.DB) int {
	t.Helper()
	var v int
	if err := bdb.View(func(tx *bolt.Tx) error {
		var err error
		v, err = readVersion(tx)
		return err
	}); err != nil {
		t.Fatalf("read schema version: %v", err)
	}
	return v
}

// putRaw stores value at the bucket path under v1, creating buckets on the way.
func putRaw(tx *bolt.Tx, value []byte, path ...string) error {
	b := tx.Bucket(bucketRoot)
	for _, name := range path[:len(path)-1] {
		var err error
		if b, err = b.CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
	}
	return b.Put([]byte(path[len(path)-1]), value)
}

func TestOpenInitialisesFreshFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet", "there")
	path := filepath.Join(dir, "state.db")
	db := openTest(t, path)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode = %o, want 600", got)
	}
	if v := versionOf(t, db.bolt); v != schemaVersion() {
		t.Errorf("schema version = %d, want %d", v, schemaVersion())
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketDesired, bucketPods} {
			if _, err := rootBucket(tx, name); err != nil {
				t.Error(err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	recs, errs, err := db.ListDesired()
	if err != nil || len(recs) != 0 || len(errs) != 0 {
		t.Errorf("ListDesired on fresh file = %v, %v, %v; want nothing", recs, errs, err)
	}
	pods, errs, err := db.ListPods()
	if err != nil || len(pods) != 0 || len(errs) != 0 {
		t.Errorf("ListPods on fresh file = %v, %v, %v; want nothing", pods, errs, err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open("", Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Open(\"\") error = %v, want ErrInvalidArgument", err)
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	first, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()

	opts := testOptions(t)
	opts.LockTimeout = 100 * time.Millisecond
	second, err := Open(path, opts)
	if err == nil {
		second.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("error = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "is another daemonlet agent running?") {
		t.Errorf("error %q does not ask whether another agent is running", err)
	}

	// Once the holder closes, the same Open succeeds: the lock was the cause.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err = Open(path, opts)
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	newer := schemaVersion() + 1
	rawUpdate(t, path, func(tx *bolt.Tx) error { return writeVersion(tx, newer) })

	db, err = Open(path, testOptions(t))
	if err == nil {
		db.Close()
		t.Fatal("Open of a file with a newer schema succeeded")
	}
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("error = %v, want ErrFailedPrecondition", err)
	}
	if !strings.Contains(err.Error(), "newer daemonlet") {
		t.Errorf("error %q does not say the file is from a newer daemonlet", err)
	}
	if got := rawVersion(t, path); got != newer {
		t.Errorf("refused file now has schema version %d, want it left at %d", got, newer)
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("someone-else"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := Open(path, testOptions(t))
	if err == nil {
		db.Close()
		t.Fatal("Open of a foreign bbolt file succeeded")
	}
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("error = %v, want ErrFailedPrecondition", err)
	}
	bdb, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot) != nil {
			t.Errorf("refused foreign file got a %s bucket", bucketRoot)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorruptFiles(t *testing.T) {
	t.Run("not bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		if err := os.WriteFile(path, bytes.Repeat([]byte{0xab}, 16<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := Open(path, testOptions(t)); !errors.Is(err, errdefs.ErrDataLoss) {
			if err == nil {
				db.Close()
			}
			t.Errorf("Open of garbage error = %v, want ErrDataLoss", err)
		}
	})
	for name, value := range map[string][]byte{"non-integer": []byte("one"), "zero": []byte("0")} {
		t.Run("version "+name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := openTest(t, path).Close(); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, path, func(tx *bolt.Tx) error { return putRaw(tx, value, "meta", "version") })
			if db, err := Open(path, testOptions(t)); !errors.Is(err, errdefs.ErrDataLoss) {
				if err == nil {
					db.Close()
				}
				t.Errorf("Open with version %q error = %v, want ErrDataLoss", value, err)
			}
		})
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	want := samplePod("uid-1")
	desired := []DesiredRecord{{Source: "server", Key: "kube-system/fluentd", Revision: "r1", Object: []byte(`{"kind":"DaemonSet"}`)}}

	db, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutPod(want); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceDesired("server", desired); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openTest(t, path)
	got, err := db.GetPod("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	assertPod(t, got, want)
	recs, errs, err := db.ListDesired()
	if err != nil || len(errs) != 0 {
		t.Fatalf("ListDesired after reopen: %v, %v", errs, err)
	}
	assertDesired(t, recs, desired)
}

func TestCheckGoodFile(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	// Enough pods to spread over several pages, then a delete to free some.
	for i := range 200 {
		if err := db.PutPod(samplePod(fmt.Sprintf("uid-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.DeletePod("uid-007"); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check on a good file: %v", err)
	}
}
