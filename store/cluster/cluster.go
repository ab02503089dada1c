package cluster

import (
	"context"
	"errors"
	"strconv"
)

// KV is one key with its value and the revisions that created and last changed it.
type KV struct {
	// Key is the full key, such as "/pods/<namespace>/<name>".
	Key string
	// Value is the stored bytes; values handed out by a Store are not shared
	// with it, except that one Event is shared by all watchers that receive it.
	Value []byte
	// CreateRevision is the revision of the write that created the key.
	CreateRevision int64
	// ModRevision is the revision of the write that last changed the key.
	ModRevision int64
}

// EventType says whether a watched change put or deleted a key.
type EventType int

const (
	// EventPut is a Create or Update; CreateRevision == ModRevision tells a create.
	EventPut EventType = iota + 1
	// EventDelete is a Delete; the event's KV holds the key's last value.
	EventDelete
)

// String returns the name of the event type, for logs and test failures.
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	default:
		return "EventType(" + strconv.Itoa(int(t)) + ")"
	}
}

// Event is one change seen by a watcher.
type Event struct {
	// Type is the kind of change.
	Type EventType
	// KV is the key after a put, or its last value for a delete, in which case
	// KV.ModRevision is the delete's revision. Watchers share it: do not modify
	// KV.Value.
	KV KV
	// Revision is the store revision of the change.
	Revision int64
}

// ErrCompacted is returned by Watch when the changes after the requested
// revision are no longer retained; the caller must list again and watch from
// the list's revision (the server answers it with 410 Gone).
var ErrCompacted = errors.New("required revision has been compacted")

// Store is the server's storage: a flat key space with one store-wide
// revision, implemented by Bolt and, later, by an etcd backend; clustertest.Run
// is the definition of its semantics that every implementation must pass.
type Store interface {
	// Get returns the key's current value; errdefs.ErrNotFound if absent.
	Get(ctx context.Context, key string) (KV, error)
	// List returns the keys starting with prefix, sorted by key, and the store
	// revision the read saw ("" lists everything).
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Create stores a new key and returns the write's revision;
	// errdefs.ErrAlreadyExists if the key exists.
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Update replaces the value of an existing key if its ModRevision equals
	// expectedModRevision (0: unconditionally) and returns the write's
	// revision; errdefs.ErrNotFound if absent, errdefs.ErrConflict on mismatch.
	Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (int64, error)
	// Delete removes the key if its ModRevision equals expectedModRevision
	// (0: unconditionally) and returns the KV as it was stored and the delete's
	// revision; errdefs.ErrNotFound if absent, errdefs.ErrConflict on mismatch.
	Delete(ctx context.Context, key string, expectedModRevision int64) (KV, int64, error)
	// Watch streams every change to keys starting with prefix whose revision
	// is greater than afterRevision, in revision order, without gaps or
	// duplicates. It returns ErrCompacted when a change after afterRevision is
	// no longer retained. The channel is closed when ctx ends, when the store
	// closes, or when the receiver falls too far behind; the caller then
	// watches again from the last revision it received.
	Watch(ctx context.Context, prefix string, afterRevision int64) (<-chan Event, error)
	// Revision returns the revision of the last write (0 for a new store).
	Revision() int64
	// Close releases the store and closes every watch channel.
	Close() error
}
