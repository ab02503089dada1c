package store

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// Bucket and key names of the tree drawn in doc.go.
var (
	bucketRoot    = []byte("v1")
	bucketMeta    = []byte("meta")
	keyVersion    = []byte("version")
	bucketDesired = []byte("desired")
	bucketPods    = []byte("pods")
	bucketObjects = []byte("objects")
	keyPodRecord  = []byte("record")
)

// Options tunes Open; the zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the exclusive file lock, so that a second
	// agent fails fast instead of hanging; zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives schema initialisation and migration messages; nil discards them.
	Logger *slog.Logger
	// SecretKeyPath is the file holding the AES-256 key that seals Secrets
	// at rest, created (0600) on first use; empty means "secret.key" beside
	// the store file.
	SecretKeyPath string
}

// DB is the agent's node-local state store, backed by one bbolt file.
type DB struct {
	bolt    *bolt.DB
	keyPath string

	keyMu sync.Mutex  // guards gcm
	gcm   cipher.AEAD // nil until the key is first needed
}

// Open opens (creating it and its directory if needed) the store file at path
// and brings its schema up to the version this binary knows.
func Open(path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open store: empty path: %w", errdefs.ErrInvalidArgument)
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// 0700: the store holds desired state that may later include secrets.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: create directory: %w", path, err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, classifyOpenError(path, timeout, err)
	}
	from, to, err := migrate(bdb)
	if err != nil {
		// The migration error is the one worth reporting; a close failure of a
		// file we only read adds nothing.
		_ = bdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	switch {
	case from == 0:
		logger.Info("initialised store", "path", path, "schema", to)
	case from < to:
		logger.Info("migrated store", "path", path, "from", from, "to", to)
	}
	keyPath := opts.SecretKeyPath
	if keyPath == "" {
		keyPath = filepath.Join(filepath.Dir(path), "secret.key")
	}
	return &DB{bolt: bdb, keyPath: keyPath}, nil
}

// classifyOpenError turns bbolt's open errors into errdefs classes with a
// message an operator can act on.
func classifyOpenError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open store %s: file is still locked after %s; is another daemonlet agent running? (%v): %w",
			path, timeout, err, errdefs.ErrUnavailable)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("open store %s: not a bbolt file or its meta pages are corrupt (%v): %w",
			path, err, errdefs.ErrDataLoss)
	case errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("open store %s: written by an incompatible bbolt version (%v): %w",
			path, err, errdefs.ErrFailedPrecondition)
	default:
		return fmt.Errorf("open store %s: %w", path, err)
	}
}

// Close releases the file and its lock.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", db.bolt.Path(), err)
	}
	return nil
}

// Check runs bbolt's consistency check over the whole file and returns every
// problem found, so that crash tests can assert that the file survived.
func (db *DB) Check() error {
	var problems []error
	err := db.bolt.View(func(tx *bolt.Tx) error {
		// The channel must be drained: the checker goroutine blocks until it is.
		for err := range tx.Check() {
			problems = append(problems, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check store %s: %w", db.bolt.Path(), err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("check store %s: %w: %w", db.bolt.Path(), errors.Join(problems...), errdefs.ErrDataLoss)
	}
	return nil
}

// rootBucket returns the named bucket under v1, or a data-loss error when the
// layout that migrations created is missing.
func rootBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketRoot)
	if root == nil {
		return nil, fmt.Errorf("bucket %s missing: %w", bucketRoot, errdefs.ErrDataLoss)
	}
	b := root.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("bucket %s/%s missing: %w", bucketRoot, name, errdefs.ErrDataLoss)
	}
	return b, nil
}

// deleteEntry removes name from b whether it is a nested bucket or a plain
// value; a plain value where a bucket belongs is corruption that List has
// reported, and deleting it is how the caller clears it.
func deleteEntry(b *bolt.Bucket, name []byte) error {
	if b.Bucket(name) != nil {
		return b.DeleteBucket(name)
	}
	return b.Delete(name)
}
