package cluster

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// migrationTests holds one test per entry of migrations, keyed by the schema
// version the migration starts from. TestEveryMigrationHasATest fails until a
// newly appended migration gets its case here.
var migrationTests = map[int]func(t *testing.T){
	0: testMigrateCreateV1,
}

func TestEveryMigrationHasATest(t *testing.T) {
	for v, m := range migrations {
		if _, ok := migrationTests[v]; !ok {
			t.Errorf("migration %d to %d (%s) has no case in migrationTests", v, v+1, m.name)
		}
	}
	for v := range migrationTests {
		if v < 0 || v >= len(migrations) {
			t.Errorf("migrationTests has a case for version %d, but no migration starts there", v)
		}
	}
}

func TestMigrations(t *testing.T) {
	for _, v := range slices.Sorted(maps.Keys(migrationTests)) {
		t.Run(fmt.Sprintf("%d-to-%d", v, v+1), migrationTests[v])
	}
}

// openRaw opens a bbolt file without the store's migrations.
func openRaw(t *testing.T, path string) *bolt.DB {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	return bdb
}

func testMigrateCreateV1(t *testing.T) {
	bdb := openRaw(t, filepath.Join(t.TempDir(), "cluster.db"))
	if err := bdb.Update(migrations[0].apply); err != nil {
		t.Fatalf("migration: %v", err)
	}
	if err := bdb.View(func(tx *bolt.Tx) error {
		var top [][]byte
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			top = append(top, name)
			return nil
		}); err != nil {
			return err
		}
		if len(top) != 1 || string(top[0]) != string(bucketRoot) {
			t.Errorf("top-level buckets = %q, want only %s", top, bucketRoot)
		}
		for _, name := range [][]byte{bucketKV, bucketLog} {
			b, err := rootBucket(tx, name)
			if err != nil {
				return err
			}
			if k, _ := b.Cursor().First(); k != nil {
				t.Errorf("bucket %s is not empty after creation", name)
			}
		}
		rev, compacted, err := readRevisions(tx)
		if err != nil {
			return err
		}
		if rev != 0 || compacted != 0 {
			t.Errorf("new file has revision %d, compacted %d; want 0, 0", rev, compacted)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// withMigrations replaces the migrations slice for one test.
func withMigrations(t *testing.T, ms []migration) {
	t.Helper()
	saved := migrations
	migrations = ms
	t.Cleanup(func() { migrations = saved })
}

// versionOf reads the schema version of a closed file.
func versionOf(t *testing.T, path string) int {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	var v int
	if err := bdb.View(func(tx *bolt.Tx) error {
		v, err = readVersion(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenRunsPendingMigrations(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cluster.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/a", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	extra := []byte("extra")
	withMigrations(t, append(slices.Clone(migrations), migration{
		name: "add extra bucket",
		apply: func(tx *bolt.Tx) error {
			_, err := tx.Bucket(bucketRoot).CreateBucket(extra)
			return err
		},
	}))
	s, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/a"); err != nil {
		t.Errorf("data lost by migration: %v", err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(extra) == nil {
			t.Error("pending migration did not run")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := versionOf(t, path), len(migrations); got != want {
		t.Errorf("schema version after migration = %d, want %d", got, want)
	}
}

func TestFailedMigrationLeavesFileUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := len(migrations)

	boom := errors.New("boom")
	partial := []byte("partial")
	withMigrations(t, append(slices.Clone(migrations),
		migration{name: "writes then succeeds", apply: func(tx *bolt.Tx) error {
			_, err := tx.Bucket(bucketRoot).CreateBucket(partial)
			return err
		}},
		migration{name: "fails", apply: func(*bolt.Tx) error { return boom }},
	))
	if s, err := OpenBolt(path, BoltOptions{}); !errors.Is(err, boom) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("OpenBolt with a failing migration error = %v, want %v", err, boom)
	}
	if got := versionOf(t, path); got != before {
		t.Errorf("schema version after failed migration = %d, want %d", got, before)
	}
	bdb := openRaw(t, path)
	if err := bdb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(partial) != nil {
			t.Error("an earlier migration of the failed run was committed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
