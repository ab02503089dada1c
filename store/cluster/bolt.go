package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

const (
	// DefaultLockTimeout is how long OpenBolt waits for the file lock when
	// BoltOptions.LockTimeout is zero.
	DefaultLockTimeout = time.Second
	// DefaultHistoryLimit is the number of changes kept for watch resume when
	// BoltOptions.HistoryLimit is zero.
	DefaultHistoryLimit = 100000
)

const (
	// watchBuffer is the capacity of a watch channel, and of the queue of live
	// events held for a watcher while it replays: a receiver further behind
	// is closed rather than allowed to hold the writer up.
	watchBuffer = 1024
	// replayChunk is the number of log records one replay transaction reads,
	// so that a long replay never holds a read transaction (which blocks
	// bbolt from growing its memory map) while waiting on its receiver.
	replayChunk = 256
	// maxTrimBatch bounds the deletes one write does to trim the log.
	maxTrimBatch = 1024
	// maxKeyLen is bbolt's key size limit; the kv bucket uses keys as they are.
	maxKeyLen = 32768
)

// Bucket and key names of the tree drawn in doc.go.
var (
	bucketRoot   = []byte("v1")
	bucketMeta   = []byte("meta")
	keyVersion   = []byte("version")
	keyRevision  = []byte("revision")
	keyCompacted = []byte("compactedRevision")
	bucketKV     = []byte("kv")
	bucketLog    = []byte("log")
)

// BoltOptions tunes OpenBolt; the zero value is usable.
type BoltOptions struct {
	// LockTimeout bounds the wait for the exclusive file lock, so that a second
	// server on the same file fails fast; zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// HistoryLimit is the number of most recent changes retained for watchers
	// to resume from; zero means DefaultHistoryLimit. Lowering it between
	// opens drops the excess at the next write.
	HistoryLimit int
	// Logger receives schema and slow-watcher messages; nil discards them.
	Logger *slog.Logger
}

// Bolt is the embedded Store, one bbolt file; see doc.go for its layout and
// locking.
type Bolt struct {
	db           *bolt.DB
	logger       *slog.Logger
	historyLimit int64
	trimBatch    int64

	// writeMu serialises writes from the start of their transaction to the
	// publication of their event, so that events are published in revision order.
	writeMu sync.Mutex

	// revision is the revision of the last published write; written under pubMu.
	revision atomic.Int64

	// pubMu guards the fields below and every watcher's state.
	pubMu sync.Mutex
	// compacted is the compactedRevision of the last published write.
	compacted int64
	// watchers are the open watchers.
	watchers map[*watcher]struct{}
	// closed is set by Close; no watcher is added afterwards.
	closed bool
	// replays counts running replay goroutines, which Close waits for.
	replays sync.WaitGroup
}

var _ Store = (*Bolt)(nil)

// watcher is one Watch call. prefix, after, ch, cancel and stop are set
// once by Watch; replaying, pending and closed are guarded by Bolt.pubMu.
type watcher struct {
	prefix string
	// after is the revision the caller watches from; it can be ahead of the
	// published revision, since List reads revisions committed but not yet
	// published, and changes up to it must not be sent.
	after int64
	ch    chan Event
	// cancel ends the replay goroutine's wait on ch; stop unregisters the
	// AfterFunc that closes the watcher when the caller's context ends.
	cancel context.CancelFunc
	stop   func() bool
	// replaying is true while the replay goroutine owns ch: it sends to ch
	// and closes it, and live events are queued in pending meanwhile. Once it
	// is false, the writer sends to ch and Bolt.closeLocked closes it.
	replaying bool
	pending   []Event
	closed    bool
}

// OpenBolt opens (creating it and its directory if needed) the store file at
// path and brings its schema up to the version this binary knows.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if path == "" {
		return nil, fmt.Errorf("open cluster store: empty path: %w", errdefs.ErrInvalidArgument)
	}
	if opts.HistoryLimit < 0 {
		return nil, fmt.Errorf("open cluster store %s: negative history limit %d: %w",
			path, opts.HistoryLimit, errdefs.ErrInvalidArgument)
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	limit := int64(opts.HistoryLimit)
	if limit == 0 {
		limit = DefaultHistoryLimit
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open cluster store %s: create directory: %w", path, err)
	}
	// 0600: the store holds every object of the cluster, secrets included later.
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, classifyOpenError(path, timeout, err)
	}
	from, to, err := migrate(bdb)
	if err != nil {
		// The migration error is the one worth reporting.
		_ = bdb.Close()
		return nil, fmt.Errorf("open cluster store %s: %w", path, err)
	}
	switch {
	case from == 0:
		logger.Info("initialised cluster store", "path", path, "schema", to)
	case from < to:
		logger.Info("migrated cluster store", "path", path, "from", from, "to", to)
	}
	b := &Bolt{
		db:           bdb,
		logger:       logger,
		historyLimit: limit,
		trimBatch:    min(max(limit/8, 1), maxTrimBatch),
		watchers:     make(map[*watcher]struct{}),
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		rev, compacted, err := readRevisions(tx)
		b.revision.Store(rev)
		b.compacted = compacted
		return err
	})
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open cluster store %s: %w", path, err)
	}
	return b, nil
}

// classifyOpenError turns bbolt's open errors into errdefs classes with a
// message an operator can act on.
func classifyOpenError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open cluster store %s: file is still locked after %s; is another daemonlet server running? (%v): %w",
			path, timeout, err, errdefs.ErrUnavailable)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("open cluster store %s: not a bbolt file or its meta pages are corrupt (%v): %w",
			path, err, errdefs.ErrDataLoss)
	case errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("open cluster store %s: written by an incompatible bbolt version (%v): %w",
			path, err, errdefs.ErrFailedPrecondition)
	default:
		return fmt.Errorf("open cluster store %s: %w", path, err)
	}
}

// classify gives bbolt's errors of an open store an errdefs class; errors
// that already carry one pass through.
func classify(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%v: %w", err, errdefs.ErrUnavailable)
	}
	return err
}

// Close closes every watch channel, waits for running replays and releases
// the file and its lock. Calling it again does nothing.
func (b *Bolt) Close() error {
	b.pubMu.Lock()
	if b.closed {
		b.pubMu.Unlock()
		return nil
	}
	b.closed = true
	for w := range b.watchers {
		b.closeLocked(w, "store closed")
	}
	b.pubMu.Unlock()
	b.replays.Wait()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close cluster store %s: %w", b.db.Path(), err)
	}
	return nil
}

// Revision returns the revision of the last write.
func (b *Bolt) Revision() int64 { return b.revision.Load() }

// Get returns the key's current value.
func (b *Bolt) Get(ctx context.Context, key string) (KV, error) {
	if err := checkKey(key); err != nil {
		return KV{}, fmt.Errorf("get %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return KV{}, fmt.Errorf("get %q: %w", key, err)
	}
	var kv KV
	err := b.db.View(func(tx *bolt.Tx) error {
		kvs, err := rootBucket(tx, bucketKV)
		if err != nil {
			return err
		}
		raw := kvs.Get([]byte(key))
		if raw == nil {
			return errdefs.ErrNotFound
		}
		kv, err = decodeKV(key, raw)
		return err
	})
	if err != nil {
		return KV{}, fmt.Errorf("get %q: %w", key, classify(err))
	}
	return kv, nil
}

// List returns the keys starting with prefix, sorted, and the revision read.
func (b *Bolt) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("list %q: %w", prefix, err)
	}
	var (
		kvs []KV
		rev int64
	)
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		// The revision comes from the same transaction as the keys, so that a
		// watch from it misses nothing and repeats nothing of the list.
		if rev, _, err = readRevisions(tx); err != nil {
			return err
		}
		bucket, err := rootBucket(tx, bucketKV)
		if err != nil {
			return err
		}
		p := []byte(prefix)
		c := bucket.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decodeKV(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list %q: %w", prefix, classify(err))
	}
	return kvs, rev, nil
}

// Create stores a new key.
func (b *Bolt) Create(ctx context.Context, key string, value []byte) (int64, error) {
	ev, err := b.write(ctx, "create", key, func(kvs *bolt.Bucket, rev int64) (Event, error) {
		if old := kvs.Get([]byte(key)); old != nil {
			return Event{}, errdefs.ErrAlreadyExists
		}
		kv := KV{Key: key, Value: bytes.Clone(value), CreateRevision: rev, ModRevision: rev}
		return Event{Type: EventPut, KV: kv, Revision: rev}, kvs.Put([]byte(key), encodeKV(kv))
	})
	return ev.Revision, err
}

// Update replaces the value of an existing key.
func (b *Bolt) Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (int64, error) {
	ev, err := b.write(ctx, "update", key, func(kvs *bolt.Bucket, rev int64) (Event, error) {
		old, err := current(kvs, key, expectedModRevision)
		if err != nil {
			return Event{}, err
		}
		kv := KV{Key: key, Value: bytes.Clone(value), CreateRevision: old.CreateRevision, ModRevision: rev}
		return Event{Type: EventPut, KV: kv, Revision: rev}, kvs.Put([]byte(key), encodeKV(kv))
	})
	return ev.Revision, err
}

// Delete removes a key and returns it as it was stored.
func (b *Bolt) Delete(ctx context.Context, key string, expectedModRevision int64) (KV, int64, error) {
	var deleted KV
	ev, err := b.write(ctx, "delete", key, func(kvs *bolt.Bucket, rev int64) (Event, error) {
		old, err := current(kvs, key, expectedModRevision)
		if err != nil {
			return Event{}, err
		}
		// The caller and the watchers must not share Value.
		deleted = old
		deleted.Value = bytes.Clone(old.Value)
		gone := old
		gone.ModRevision = rev
		return Event{Type: EventDelete, KV: gone, Revision: rev}, kvs.Delete([]byte(key))
	})
	if err != nil {
		return KV{}, 0, err
	}
	return deleted, ev.Revision, nil
}

// current reads the key for Update and Delete and checks their precondition.
func current(kvs *bolt.Bucket, key string, expectedModRevision int64) (KV, error) {
	raw := kvs.Get([]byte(key))
	if raw == nil {
		return KV{}, errdefs.ErrNotFound
	}
	kv, err := decodeKV(key, raw)
	if err != nil {
		return KV{}, err
	}
	if expectedModRevision != 0 && kv.ModRevision != expectedModRevision {
		return KV{}, fmt.Errorf("modified at revision %d, expected %d: %w",
			kv.ModRevision, expectedModRevision, errdefs.ErrConflict)
	}
	return kv, nil
}

// write runs one change in its own Update transaction: apply changes the kv
// bucket at revision rev and returns the change's event, which write appends
// to the log (trimming it) and publishes to watchers once it is committed.
func (b *Bolt) write(ctx context.Context, op, key string, apply func(kvs *bolt.Bucket, rev int64) (Event, error)) (Event, error) {
	if err := checkKey(key); err != nil {
		return Event{}, fmt.Errorf("%s %q: %w", op, key, err)
	}
	if err := ctx.Err(); err != nil {
		return Event{}, fmt.Errorf("%s %q: %w", op, key, err)
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	var (
		ev        Event
		compacted int64
	)
	err := b.db.Update(func(tx *bolt.Tx) error {
		rev, oldCompacted, err := readRevisions(tx)
		if err != nil {
			return err
		}
		kvs, err := rootBucket(tx, bucketKV)
		if err != nil {
			return err
		}
		log, err := rootBucket(tx, bucketLog)
		if err != nil {
			return err
		}
		meta, err := rootBucket(tx, bucketMeta)
		if err != nil {
			return err
		}
		rev++
		if ev, err = apply(kvs, rev); err != nil {
			return err
		}
		if err := log.Put(revisionKey(rev), encodeLog(ev)); err != nil {
			return err
		}
		if compacted, err = b.trim(log, rev, oldCompacted); err != nil {
			return err
		}
		if err := meta.Put(keyRevision, []byte(strconv.FormatInt(rev, 10))); err != nil {
			return err
		}
		if compacted != oldCompacted {
			return meta.Put(keyCompacted, []byte(strconv.FormatInt(compacted, 10)))
		}
		return nil
	})
	if err != nil {
		return Event{}, fmt.Errorf("%s %q: %w", op, key, classify(err))
	}
	b.publish(ev, compacted)
	return ev, nil
}

// trim drops the oldest trimBatch log records once the log, which holds
// revisions compacted+1..rev, reaches historyLimit+trimBatch of them, and
// returns the new compacted revision.
func (b *Bolt) trim(log *bolt.Bucket, rev, compacted int64) (int64, error) {
	if rev-compacted < b.historyLimit+b.trimBatch {
		return compacted, nil
	}
	newCompacted := rev - b.historyLimit
	for r := compacted + 1; r <= newCompacted; r++ {
		if err := log.Delete(revisionKey(r)); err != nil {
			return 0, fmt.Errorf("trim log record %d: %w", r, err)
		}
	}
	return newCompacted, nil
}

// publish hands a committed change to the watchers of its key; the caller
// holds writeMu, so events are published in revision order.
func (b *Bolt) publish(ev Event, compacted int64) {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	b.revision.Store(ev.Revision)
	b.compacted = compacted
	for w := range b.watchers {
		if ev.Revision <= w.after || !strings.HasPrefix(ev.KV.Key, w.prefix) {
			continue
		}
		if w.replaying {
			if len(w.pending) >= watchBuffer {
				b.closeLocked(w, "too many changes during replay")
				continue
			}
			w.pending = append(w.pending, ev)
			continue
		}
		select {
		case w.ch <- ev:
		default:
			b.closeLocked(w, "receiver too slow")
		}
	}
}

// Watch streams the changes to keys starting with prefix after afterRevision.
func (b *Bolt) Watch(ctx context.Context, prefix string, afterRevision int64) (<-chan Event, error) {
	if afterRevision < 0 {
		return nil, fmt.Errorf("watch %q: negative revision %d: %w", prefix, afterRevision, errdefs.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("watch %q: %w", prefix, err)
	}
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("watch %q: store closed: %w", prefix, errdefs.ErrUnavailable)
	}
	if afterRevision < b.compacted {
		return nil, fmt.Errorf("watch %q after revision %d: the oldest retained change is %d: %w",
			prefix, afterRevision, b.compacted+1, ErrCompacted)
	}
	// Holding pubMu fixes the split: changes up to through are committed and
	// in the log, later ones will be published to w.
	through := b.revision.Load()
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{
		prefix:    prefix,
		after:     afterRevision,
		ch:        make(chan Event, watchBuffer),
		cancel:    cancel,
		replaying: afterRevision < through,
	}
	w.stop = context.AfterFunc(ctx, func() {
		b.pubMu.Lock()
		defer b.pubMu.Unlock()
		b.closeLocked(w, "")
	})
	b.watchers[w] = struct{}{}
	if w.replaying {
		b.replays.Add(1)
		go b.replay(wctx, w, afterRevision, through)
	}
	return w.ch, nil
}

// closeLocked unregisters w and closes its channel, unless its replay
// goroutine owns the channel, which then closes it on seeing w.closed or
// its cancelled context. A non-empty reason is logged. The caller holds pubMu.
func (b *Bolt) closeLocked(w *watcher, reason string) {
	if w.closed {
		return
	}
	w.closed = true
	delete(b.watchers, w)
	w.stop()
	w.cancel()
	w.pending = nil
	if reason != "" {
		b.logger.Info("closing watcher; it resumes from its last revision", "prefix", w.prefix, "reason", reason)
	}
	if !w.replaying {
		close(w.ch)
	}
}

// replay sends the logged changes after..through to w, then the live changes
// queued meanwhile, and then hands w to the writer. It owns w.ch until then.
func (b *Bolt) replay(ctx context.Context, w *watcher, after, through int64) {
	defer b.replays.Done()
	for next := after + 1; next <= through; next += replayChunk {
		events, err := b.readLog(w.prefix, next, min(through, next+replayChunk-1))
		if err != nil {
			b.endReplay(w, fmt.Sprintf("replay failed: %v", err))
			return
		}
		if !send(ctx, w.ch, events) {
			b.endReplay(w, "")
			return
		}
	}
	for {
		b.pubMu.Lock()
		if w.closed {
			b.pubMu.Unlock()
			close(w.ch)
			return
		}
		queued := w.pending
		w.pending = nil
		if len(queued) == 0 {
			w.replaying = false
			b.pubMu.Unlock()
			return
		}
		b.pubMu.Unlock()
		if !send(ctx, w.ch, queued) {
			b.endReplay(w, "")
			return
		}
	}
}

// endReplay closes a watcher whose replay stops early.
func (b *Bolt) endReplay(w *watcher, reason string) {
	b.pubMu.Lock()
	b.closeLocked(w, reason)
	b.pubMu.Unlock()
	close(w.ch)
}

// send delivers events in order, and reports false if ctx ended first.
func send(ctx context.Context, ch chan<- Event, events []Event) bool {
	for _, ev := range events {
		// select picks at random among ready cases; a closed watcher must
		// stop at once even while its receiver keeps up.
		if ctx.Err() != nil {
			return false
		}
		select {
		case ch <- ev:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// readLog returns the changes from..through (inclusive) to keys starting
// with prefix, in one short read transaction.
func (b *Bolt) readLog(prefix string, from, through int64) ([]Event, error) {
	var events []Event
	err := b.db.View(func(tx *bolt.Tx) error {
		_, compacted, err := readRevisions(tx)
		if err != nil {
			return err
		}
		// A write since Watch may have trimmed what this replay still needs.
		if from <= compacted {
			return fmt.Errorf("change %d dropped during replay: %w", from, ErrCompacted)
		}
		log, err := rootBucket(tx, bucketLog)
		if err != nil {
			return err
		}
		c := log.Cursor()
		want := from
		for k, v := c.Seek(revisionKey(from)); k != nil && want <= through; k, v = c.Next() {
			if !bytes.Equal(k, revisionKey(want)) {
				return fmt.Errorf("log record %d missing: %w", want, errdefs.ErrDataLoss)
			}
			ev, err := decodeLog(want, v)
			if err != nil {
				return err
			}
			if strings.HasPrefix(ev.KV.Key, prefix) {
				events = append(events, ev)
			}
			want++
		}
		if want <= through {
			return fmt.Errorf("log record %d missing: %w", want, errdefs.ErrDataLoss)
		}
		return nil
	})
	return events, classify(err)
}

// readRevisions reads the store revision and the compacted revision.
func readRevisions(tx *bolt.Tx) (rev, compacted int64, err error) {
	meta, err := rootBucket(tx, bucketMeta)
	if err != nil {
		return 0, 0, err
	}
	if rev, err = readCounter(meta, keyRevision); err != nil {
		return 0, 0, err
	}
	if compacted, err = readCounter(meta, keyCompacted); err != nil {
		return 0, 0, err
	}
	return rev, compacted, nil
}

// rootBucket returns the named bucket under v1, or a data-loss error when the
// layout that migrations created is missing.
func rootBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketRoot)
	if root == nil {
		return nil, fmt.Errorf("bucket %s missing: %w", bucketRoot, errdefs.ErrDataLoss)
	}
	bucket := root.Bucket(name)
	if bucket == nil {
		return nil, fmt.Errorf("bucket %s/%s missing: %w", bucketRoot, name, errdefs.ErrDataLoss)
	}
	return bucket, nil
}

// checkKey refuses keys bbolt cannot store.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key: %w", errdefs.ErrInvalidArgument)
	case len(key) > maxKeyLen:
		return fmt.Errorf("key of %d bytes exceeds %d: %w", len(key), maxKeyLen, errdefs.ErrInvalidArgument)
	}
	return nil
}
