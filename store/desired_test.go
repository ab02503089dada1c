package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// assertDesired fails the test unless got equals want in order.
func assertDesired(t *testing.T, got, want []DesiredRecord) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("desired records\n got: %+v\nwant: %+v", got, want)
	}
}

// listDesiredOK lists desired records and fails the test on any error.
func listDesiredOK(t *testing.T, db *DB) []DesiredRecord {
	t.Helper()
	recs, errs, err := db.ListDesired()
	if err != nil || len(errs) != 0 {
		t.Fatalf("ListDesired: %v, %v", errs, err)
	}
	return recs
}

func desired(source, key, rev string) DesiredRecord {
	return DesiredRecord{
		Source:    source,
		Key:       key,
		Revision:  rev,
		Object:    []byte(`{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"` + key + `"}}`),
		UpdatedAt: time.Date(2026, 3, 1, 12, 0, 0, 42, time.UTC),
	}
}

func TestReplaceDesiredRoundTrip(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	server := []DesiredRecord{desired("server", "monitoring/node-exporter", "r2"), desired("server", "kube-system/fluentd", "r1")}
	// A record may leave Source empty: the argument names the source.
	file := []DesiredRecord{{Key: "default/static", Object: []byte{0, 1, 0xff}}}
	if err := db.ReplaceDesired("server", server); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceDesired("file", file); err != nil {
		t.Fatal(err)
	}
	// Ordered by source, then key; Source filled in from the bucket.
	assertDesired(t, listDesiredOK(t, db), []DesiredRecord{
		{Source: "file", Key: "default/static", Object: []byte{0, 1, 0xff}},
		server[1],
		server[0],
	})
}

func TestReplaceDesiredReplacesAndRemoves(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	other := desired("file", "default/static", "r1")
	if err := db.ReplaceDesired("file", []DesiredRecord{other}); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceDesired("server", []DesiredRecord{desired("server", "ns/a", "r1"), desired("server", "ns/b", "r1")}); err != nil {
		t.Fatal(err)
	}
	// ns/a is gone from the new set, ns/b changed, ns/c is new.
	next := []DesiredRecord{desired("server", "ns/b", "r2"), desired("server", "ns/c", "r1")}
	if err := db.ReplaceDesired("server", next); err != nil {
		t.Fatal(err)
	}
	assertDesired(t, listDesiredOK(t, db), []DesiredRecord{other, next[0], next[1]})

	// An empty set removes the source, bucket and all.
	if err := db.ReplaceDesired("server", nil); err != nil {
		t.Fatal(err)
	}
	assertDesired(t, listDesiredOK(t, db), []DesiredRecord{other})
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(bucketDesired).Bucket([]byte("server")) != nil {
			t.Error("bucket of a source with an empty set survived")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceDesired("never-seen", nil); err != nil {
		t.Errorf("emptying an unknown source: %v", err)
	}
}

func TestReplaceDesiredRejectsInvalidInput(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	before := []DesiredRecord{desired("server", "ns/a", "r1")}
	if err := db.ReplaceDesired("server", before); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		source string
		recs   []DesiredRecord
	}{
		{"empty source", "", nil},
		{"slash in source", "a/b", nil},
		{"record of another source", "server", []DesiredRecord{desired("file", "ns/a", "r1")}},
		{"empty key", "server", []DesiredRecord{{Source: "server"}}},
		{"duplicate key", "server", []DesiredRecord{desired("server", "ns/a", "r1"), desired("server", "ns/a", "r2")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.ReplaceDesired(tc.source, tc.recs); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error = %v, want ErrInvalidArgument", err)
			}
			assertDesired(t, listDesiredOK(t, db), before)
		})
	}
}

func TestListDesiredReportsCorruptRecordsPerKey(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	good := []DesiredRecord{desired("server", "ns/a", "r1"), desired("server", "ns/z", "r1")}
	if err := db.ReplaceDesired("server", good); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for key, value := range map[string]string{
			"ns/garbage": "{not json",
			"ns/newer":   `{"v":2,"data":{}}`,
			"ns/badtime": `{"v":1,"data":{"updatedAt":"yesterday"}}`,
		} {
			if err := putRaw(tx, []byte(value), "desired", "server", key); err != nil {
				return err
			}
		}
		if err := putRaw(tx, []byte("x"), "desired", "server", "ns/bucket", "inner"); err != nil {
			return err
		}
		return putRaw(tx, []byte("x"), "desired", "stray")
	}); err != nil {
		t.Fatal(err)
	}

	recs, errs, err := db.ListDesired()
	if err != nil {
		t.Fatalf("ListDesired: %v", err)
	}
	assertDesired(t, recs, good)
	checkErrorMap(t, errs, map[string]error{
		"server/ns/garbage": errdefs.ErrDataLoss,
		"server/ns/newer":   errdefs.ErrFailedPrecondition,
		"server/ns/badtime": errdefs.ErrDataLoss,
		"server/ns/bucket":  errdefs.ErrDataLoss,
		"stray":             errdefs.ErrDataLoss,
	})

	// The next full set from each source replaces the damage.
	if err := db.ReplaceDesired("server", good); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceDesired("stray", nil); err != nil {
		t.Fatal(err)
	}
	assertDesired(t, listDesiredOK(t, db), good)
}
