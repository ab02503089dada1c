package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Object kinds an ObjectRecord may hold.
const (
	KindConfigMap = "ConfigMap"
	KindSecret    = "Secret"
)

// secretKeySize is the AES-256 key length of the node-local secret key.
const secretKeySize = 32

// ObjectRecord is one ConfigMap or Secret of a source's last-known set,
// kept so that pods get their configuration while the source is
// unreachable, even after a reboot.
type ObjectRecord struct {
	// Source names the source that sent the object; it is the bucket the
	// record lives in.
	Source string
	// Kind is KindConfigMap or KindSecret; Secrets are sealed at rest.
	Kind string
	// Key identifies the object within its source and kind, "namespace/name".
	Key string
	// Object is the object as the source sent it; opaque to this package.
	Object []byte
	// UpdatedAt is when the source last sent this object.
	UpdatedAt time.Time
}

// objectV1 is the on-disk form of an ObjectRecord. Exactly one of Object
// (a ConfigMap) and Sealed (a Secret: AES-GCM nonce then ciphertext, under
// the node-local key, bound to its source and key) is set.
type objectV1 struct {
	Object    []byte    `json:"object,omitempty"`
	Sealed    []byte    `json:"sealed,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// objectKey is the bbolt key of a record within its source bucket.
func objectKey(kind, key string) string { return kind + "/" + key }

// ReplaceObjects atomically replaces the whole ConfigMap and Secret set of
// source with recs, as sources send full sets; an empty recs removes the
// source. Secrets are encrypted before the transaction starts.
func (db *DB) ReplaceObjects(source string, recs []ObjectRecord) error {
	if source == "" || strings.Contains(source, "/") {
		return fmt.Errorf("replace objects: source %q must be non-empty and contain no \"/\": %w",
			source, errdefs.ErrInvalidArgument)
	}
	values := make(map[string][]byte, len(recs))
	for _, rec := range recs {
		id := objectKey(rec.Kind, rec.Key)
		switch {
		case rec.Source != "" && rec.Source != source:
			return fmt.Errorf("replace objects of source %s: record %s belongs to source %s: %w",
				source, id, rec.Source, errdefs.ErrInvalidArgument)
		case rec.Kind != KindConfigMap && rec.Kind != KindSecret:
			return fmt.Errorf("replace objects of source %s: record %q has kind %q, want %s or %s: %w",
				source, rec.Key, rec.Kind, KindConfigMap, KindSecret, errdefs.ErrInvalidArgument)
		case rec.Key == "":
			return fmt.Errorf("replace objects of source %s: %s record with empty key: %w",
				source, rec.Kind, errdefs.ErrInvalidArgument)
		}
		if _, dup := values[id]; dup {
			return fmt.Errorf("replace objects of source %s: %s given twice: %w", source, id, errdefs.ErrInvalidArgument)
		}
		w := objectV1{UpdatedAt: rec.UpdatedAt}
		if rec.Kind == KindSecret {
			sealed, err := db.seal(rec.Object, []byte(source+"/"+id))
			if err != nil {
				return fmt.Errorf("replace objects of source %s: %s: %w", source, id, err)
			}
			w.Sealed = sealed
		} else {
			w.Object = rec.Object
		}
		v, err := encode(w)
		if err != nil {
			return fmt.Errorf("replace objects of source %s: %s: %w", source, id, err)
		}
		values[id] = v
	}
	if err := db.replaceSourceBucket(bucketObjects, source, values); err != nil {
		return fmt.Errorf("replace objects of source %s: %w", source, err)
	}
	return nil
}

// ListObjects returns every readable object record, ordered by source, kind
// and key, plus the errors of unreadable ones keyed by "<source>/<kind>/<key>"
// (or "<source>" for a damaged source bucket; nil when there are none). A
// Secret that cannot be decrypted (the key file was replaced) is such a
// per-key error. The error result is for failures that make the whole list
// unreadable.
func (db *DB) ListObjects() ([]ObjectRecord, map[string]error, error) {
	entries, err := db.readSourceBuckets(bucketObjects)
	if err != nil {
		return nil, nil, fmt.Errorf("list objects: %w", err)
	}
	var recs []ObjectRecord
	var errs map[string]error
	for _, e := range entries {
		rec, err := db.readObject(e)
		if err != nil {
			if errs == nil {
				errs = make(map[string]error)
			}
			id := e.bucket + "/" + e.key
			if e.key == "" {
				id = e.bucket
			}
			errs[id] = fmt.Errorf("object record %s: %w", id, err)
			continue
		}
		recs = append(recs, rec)
	}
	return recs, errs, nil
}

// readObject decodes (and for a Secret decrypts) one copied-out entry.
func (db *DB) readObject(e rawEntry) (ObjectRecord, error) {
	if e.err != nil {
		return ObjectRecord{}, e.err
	}
	kind, key, ok := strings.Cut(e.key, "/")
	if !ok || (kind != KindConfigMap && kind != KindSecret) {
		return ObjectRecord{}, fmt.Errorf("key does not start with %s/ or %s/: %w", KindConfigMap, KindSecret, errdefs.ErrDataLoss)
	}
	w, err := decode[objectV1](e.value)
	if err != nil {
		return ObjectRecord{}, err
	}
	rec := ObjectRecord{Source: e.bucket, Kind: kind, Key: key, Object: w.Object, UpdatedAt: w.UpdatedAt}
	if kind == KindSecret {
		if w.Object != nil {
			// A Secret in plain text is not something this binary writes.
			return ObjectRecord{}, fmt.Errorf("secret stored unencrypted: %w", errdefs.ErrDataLoss)
		}
		if rec.Object, err = db.open(w.Sealed, []byte(e.bucket+"/"+e.key)); err != nil {
			return ObjectRecord{}, err
		}
	}
	return rec, nil
}

// aead returns the cipher under the node-local key, reading the key file or,
// on first use, creating it (0600) with a fresh random key.
func (db *DB) aead() (cipher.AEAD, error) {
	db.keyMu.Lock()
	defer db.keyMu.Unlock()
	if db.gcm != nil {
		return db.gcm, nil
	}
	key, err := os.ReadFile(db.keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKeyFile(db.keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", db.keyPath, err)
	}
	if len(key) != secretKeySize {
		return nil, fmt.Errorf("secret key %s holds %d bytes, want %d: %w", db.keyPath, len(key), secretKeySize, errdefs.ErrDataLoss)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", db.keyPath, err)
	}
	if db.gcm, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("secret key %s: %w", db.keyPath, err)
	}
	return db.gcm, nil
}

// createKeyFile writes a new random key; O_EXCL keeps a concurrent creator
// from having its key overwritten.
func createKeyFile(path string) ([]byte, error) {
	key := make([]byte, secretKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return key, f.Close()
}

// seal encrypts plain; ad binds the ciphertext to its place in the file so
// that a record copied under another name does not decrypt.
func (db *DB) seal(plain, ad []byte) ([]byte, error) {
	gcm, err := db.aead()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plain, ad), nil
}

// open decrypts what seal produced.
func (db *DB) open(sealed, ad []byte) ([]byte, error) {
	gcm, err := db.aead()
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, fmt.Errorf("sealed secret too short: %w", errdefs.ErrDataLoss)
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], ad)
	if err != nil {
		return nil, fmt.Errorf("decrypt secret (was %s replaced?): %v: %w", db.keyPath, err, errdefs.ErrDataLoss)
	}
	return plain, nil
}
