package store

import (
	"fmt"
	"strconv"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// migration moves a file from schema version N (its index in migrations) to
// N+1. It runs inside the single Update transaction of migrate, so a failure
// leaves the file as it was.
type migration struct {
	name  string
	apply func(tx *bolt.Tx) error
}

// migrations is ordered: migrations[N] upgrades version N to N+1, and the
// schema version this binary writes is len(migrations). Append only; every
// entry needs its own case in migrationTests (migrations_test.go).
var migrations = []migration{
	{name: "create v1 layout", apply: migrateCreateV1},
	{name: "add objects bucket", apply: migrateAddObjects},
}

// schemaVersion is the version this binary reads and writes.
func schemaVersion() int { return len(migrations) }

// migrateCreateV1 creates the buckets drawn in doc.go in an empty file.
func migrateCreateV1(tx *bolt.Tx) error {
	root, err := tx.CreateBucket(bucketRoot)
	if err != nil {
		return fmt.Errorf("create %s: %w", bucketRoot, err)
	}
	for _, name := range [][]byte{bucketMeta, bucketDesired, bucketPods} {
		if _, err := root.CreateBucket(name); err != nil {
			return fmt.Errorf("create %s/%s: %w", bucketRoot, name, err)
		}
	}
	return nil
}

// migrateAddObjects adds the bucket of last-known ConfigMaps and Secrets
// (issue 6); existing desired state and pod records are untouched.
func migrateAddObjects(tx *bolt.Tx) error {
	root := tx.Bucket(bucketRoot)
	if root == nil {
		return fmt.Errorf("bucket %s missing: %w", bucketRoot, errdefs.ErrDataLoss)
	}
	if _, err := root.CreateBucket(bucketObjects); err != nil {
		return fmt.Errorf("create %s/%s: %w", bucketRoot, bucketObjects, err)
	}
	return nil
}

// migrate runs the pending migrations and records the new version, all in one
// Update transaction; it returns the version found and the version written.
func migrate(bdb *bolt.DB) (from, to int, err error) {
	to = schemaVersion()
	err = bdb.Update(func(tx *bolt.Tx) error {
		from, err = readVersion(tx)
		if err != nil {
			return err
		}
		if from > to {
			return fmt.Errorf("schema version %d was written by a newer daemonlet (this binary knows up to %d); refusing to open it so as not to damage it: upgrade daemonlet or move the file away: %w",
				from, to, errdefs.ErrFailedPrecondition)
		}
		if from == to {
			return nil
		}
		for v := from; v < to; v++ {
			if err := migrations[v].apply(tx); err != nil {
				return fmt.Errorf("migrate schema %d to %d (%s): %w", v, v+1, migrations[v].name, err)
			}
		}
		return writeVersion(tx, to)
	})
	return from, to, err
}

// readVersion returns the schema version of the file, 0 for an empty file.
func readVersion(tx *bolt.Tx) (int, error) {
	root := tx.Bucket(bucketRoot)
	if root == nil {
		// Only an empty file counts as fresh: initialising a file that holds
		// other buckets would mix our layout into someone else's data.
		if k, _ := tx.Cursor().First(); k != nil {
			return 0, fmt.Errorf("not a daemonlet store: top-level bucket %q present but no %s bucket: %w",
				k, bucketRoot, errdefs.ErrFailedPrecondition)
		}
		return 0, nil
	}
	meta := root.Bucket(bucketMeta)
	if meta == nil {
		return 0, fmt.Errorf("bucket %s/%s missing: %w", bucketRoot, bucketMeta, errdefs.ErrDataLoss)
	}
	raw := meta.Get(keyVersion)
	if raw == nil {
		return 0, fmt.Errorf("key %s/%s/%s missing: %w", bucketRoot, bucketMeta, keyVersion, errdefs.ErrDataLoss)
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("key %s/%s/%s holds %q, want a positive integer: %w",
			bucketRoot, bucketMeta, keyVersion, raw, errdefs.ErrDataLoss)
	}
	return v, nil
}

// writeVersion records v as the file's schema version.
func writeVersion(tx *bolt.Tx, v int) error {
	meta, err := rootBucket(tx, bucketMeta)
	if err != nil {
		return err
	}
	if err := meta.Put(keyVersion, []byte(strconv.Itoa(v))); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return nil
}
