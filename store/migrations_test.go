package store

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
	1: testMigrateAddObjects,
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
func openRaw(t *testing.T) *bolt.DB {
	t.Helper()
	bdb, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	return bdb
}

func testMigrateCreateV1(t *testing.T) {
	bdb := openRaw(t)
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
		for _, name := range [][]byte{bucketMeta, bucketDesired, bucketPods} {
			b, err := rootBucket(tx, name)
			if err != nil {
				return err
			}
			if k, _ := b.Cursor().First(); k != nil {
				t.Errorf("bucket %s is not empty after creation", name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testMigrateAddObjects builds a schema-1 file holding a desired record and
// a pod record, upgrades it and checks that the objects bucket is usable and
// the old data survived.
func testMigrateAddObjects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	full := migrations
	withMigrations(t, full[:1])
	db := openTest(t, path)
	if err := db.ReplaceDesired("file", []DesiredRecord{desired("file", "default/a", "r1")}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPod(samplePod("uid-1")); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceObjects("file", []ObjectRecord{{Kind: KindConfigMap, Key: "default/c"}}); err == nil {
		t.Fatal("ReplaceObjects on a schema-1 file succeeded; the test does not start from schema 1")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	migrations = full[:2]

	db = openTest(t, path)
	if got := versionOf(t, db.bolt); got != 2 {
		t.Errorf("schema version after migration = %d, want 2", got)
	}
	if got := listDesiredOK(t, db); len(got) != 1 || got[0].Key != "default/a" {
		t.Errorf("desired records after migration = %+v", got)
	}
	if _, err := db.GetPod("uid-1"); err != nil {
		t.Errorf("pod record lost by migration: %v", err)
	}
	want := ObjectRecord{Source: "file", Kind: KindConfigMap, Key: "default/c", Object: []byte("{}")}
	if err := db.ReplaceObjects("file", []ObjectRecord{want}); err != nil {
		t.Fatal(err)
	}
	if got, errs, err := db.ListObjects(); err != nil || errs != nil || len(got) != 1 || string(got[0].Object) != "{}" {
		t.Errorf("ListObjects after migration = %+v, %v, %v", got, errs, err)
	}
}

// withMigrations replaces the migrations slice for one test.
func withMigrations(t *testing.T, ms []migration) {
	t.Helper()
	saved := migrations
	migrations = ms
	t.Cleanup(func() { migrations = saved })
}

func TestOpenRunsPendingMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	if err := db.PutPod(samplePod("uid-1")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
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
	db = openTest(t, path)
	if got, want := versionOf(t, db.bolt), len(migrations); got != want {
		t.Errorf("schema version after migration = %d, want %d", got, want)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(extra) == nil {
			t.Error("pending migration did not run")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPod("uid-1"); err != nil {
		t.Errorf("data lost by migration: %v", err)
	}
}

func TestFailedMigrationLeavesFileUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := openTest(t, path).Close(); err != nil {
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
	if db, err := Open(path, testOptions(t)); !errors.Is(err, boom) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open with a failing migration error = %v, want %v", err, boom)
	}
	if got := rawVersion(t, path); got != before {
		t.Errorf("schema version after failed migration = %d, want %d", got, before)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(partial) != nil {
			t.Error("an earlier migration of the failed run was committed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
