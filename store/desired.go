package store

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// DesiredRecord is one object of a source's last-known desired set, kept so
// that the agent can act on it while the source is unreachable.
type DesiredRecord struct {
	// Source names the source that sent the object ("server", "file", ...);
	// it is the bucket the record lives in.
	Source string
	// Key identifies the object within its source, normally "namespace/name".
	Key string
	// Revision is the template revision the node should run for this object.
	Revision string
	// Object is the object as the source sent it; opaque to this package.
	Object []byte
	// UpdatedAt is when the source last sent this object.
	UpdatedAt time.Time
}

// desiredV1 is the on-disk form of a DesiredRecord; Source and Key are the
// bucket and key names, so they are not repeated in the value.
type desiredV1 struct {
	Revision  string    `json:"revision,omitempty"`
	Object    []byte    `json:"object,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// ReplaceDesired atomically replaces the whole desired set of source with
// recs, as kubelet sources send full sets; an empty recs removes the source.
// A record's Source must be empty or equal to source, and keys must be unique.
func (db *DB) ReplaceDesired(source string, recs []DesiredRecord) error {
	if source == "" || strings.Contains(source, "/") {
		return fmt.Errorf("replace desired state: source %q must be non-empty and contain no \"/\": %w",
			source, errdefs.ErrInvalidArgument)
	}
	values := make(map[string][]byte, len(recs))
	for _, rec := range recs {
		if rec.Source != "" && rec.Source != source {
			return fmt.Errorf("replace desired state of source %s: record %s belongs to source %s: %w",
				source, rec.Key, rec.Source, errdefs.ErrInvalidArgument)
		}
		if rec.Key == "" {
			return fmt.Errorf("replace desired state of source %s: record with empty key: %w",
				source, errdefs.ErrInvalidArgument)
		}
		if _, dup := values[rec.Key]; dup {
			return fmt.Errorf("replace desired state of source %s: key %s given twice: %w",
				source, rec.Key, errdefs.ErrInvalidArgument)
		}
		v, err := encode(desiredV1{Revision: rec.Revision, Object: rec.Object, UpdatedAt: rec.UpdatedAt})
		if err != nil {
			return fmt.Errorf("replace desired state of source %s: record %s: %w", source, rec.Key, err)
		}
		values[rec.Key] = v
	}
	if err := db.replaceSourceBucket(bucketDesired, source, values); err != nil {
		return fmt.Errorf("replace desired state of source %s: %w", source, err)
	}
	return nil
}

// rawEntry is a value copied out of a transaction, or the reason there is
// no usable value under that key.
type rawEntry struct {
	bucket, key string
	value       []byte
	err         error
}

// replaceSourceBucket replaces root/<name>/<source> with values in one
// commit. Dropping the bucket and refilling it is what makes the set
// replace whole: keys the source no longer sends disappear with it.
func (db *DB) replaceSourceBucket(name []byte, source string, values map[string][]byte) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		root, err := rootBucket(tx, name)
		if err != nil {
			return err
		}
		if err := deleteEntry(root, []byte(source)); err != nil {
			return err
		}
		if len(values) == 0 {
			return nil
		}
		b, err := root.CreateBucket([]byte(source))
		if err != nil {
			return err
		}
		for k, v := range values {
			if err := b.Put([]byte(k), v); err != nil {
				return fmt.Errorf("put %s: %w", k, err)
			}
		}
		return nil
	})
}

// readSourceBuckets copies out every value of a per-source bucket tree
// (root/<name>/<source>/<key>), with a per-entry error for what is damaged.
func (db *DB) readSourceBuckets(name []byte) ([]rawEntry, error) {
	var entries []rawEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		root, err := rootBucket(tx, name)
		if err != nil {
			return err
		}
		return root.ForEach(func(source, _ []byte) error {
			b := root.Bucket(source)
			if b == nil {
				entries = append(entries, rawEntry{bucket: string(source), err: fmt.Errorf(
					"source %s is a plain value, want a bucket: %w", source, errdefs.ErrDataLoss)})
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				e := rawEntry{bucket: string(source), key: string(k)}
				if v == nil {
					e.err = fmt.Errorf("nested bucket where a record belongs: %w", errdefs.ErrDataLoss)
				} else {
					// bbolt values are only valid inside the transaction.
					e.value = bytes.Clone(v)
				}
				entries = append(entries, e)
				return nil
			})
		})
	})
	return entries, err
}

// ListDesired returns every decodable desired record, ordered by source and
// key, plus the errors of undecodable ones keyed by "<source>/<key>" (or
// "<source>" when the source's bucket itself is damaged; nil when there are
// none), so that one corrupt record does not hide the others.
// The error result is for failures that make the whole list unreadable.
func (db *DB) ListDesired() ([]DesiredRecord, map[string]error, error) {
	entries, err := db.readSourceBuckets(bucketDesired)
	if err != nil {
		return nil, nil, fmt.Errorf("list desired state: %w", err)
	}
	var recs []DesiredRecord
	var errs map[string]error
	for _, e := range entries {
		var d desiredV1
		if e.err == nil {
			d, e.err = decode[desiredV1](e.value)
		}
		if e.err != nil {
			if errs == nil {
				errs = make(map[string]error)
			}
			id := e.bucket + "/" + e.key
			if e.key == "" {
				id = e.bucket
			}
			errs[id] = fmt.Errorf("desired record %s: %w", id, e.err)
			continue
		}
		recs = append(recs, DesiredRecord{
			Source:    e.bucket,
			Key:       e.key,
			Revision:  d.Revision,
			Object:    d.Object,
			UpdatedAt: d.UpdatedAt,
		})
	}
	return recs, errs, nil
}
