package server

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// decodedCache keeps the decoded form of a collection's stored objects by
// key and ModRevision, so that the controllers, which read every Node and
// Pod on each sync, decode only what changed since the last sync instead
// of the whole fleet each time. The broadcaster hands it the objects it
// decodes for its watchers, so a change is usually decoded once for both.
//
// Its objects are shared: they must be treated as read-only (copy one
// before changing it).
type decodedCache struct {
	res *resource

	mu      sync.Mutex
	entries map[string]decodedEntry // store key → its latest decoded value (guarded by mu)
}

type decodedEntry struct {
	rev int64 // the key's ModRevision the object was decoded at
	obj object
}

func newDecodedCache(res *resource) *decodedCache {
	return &decodedCache{res: res, entries: map[string]decodedEntry{}}
}

// list is Server.list over the whole collection, fresh from the store,
// with the objects whose ModRevision is cached taken from the cache
// (read-only, see decodedCache). It also forgets the keys that are gone.
func (c *decodedCache) list(ctx context.Context, store cluster.Store) ([]object, int64, error) {
	kvs, rev, err := store.List(ctx, c.res.prefix(""))
	if err != nil {
		return nil, 0, storeError(c.res, "", err)
	}
	entries := make(map[string]decodedEntry, len(kvs))
	items := make([]object, len(kvs))
	var misses []int // indexes of the kvs to decode, outside the lock
	c.mu.Lock()
	for i, kv := range kvs {
		if e, ok := c.entries[kv.Key]; ok && e.rev == kv.ModRevision {
			entries[kv.Key], items[i] = e, e.obj
		} else {
			misses = append(misses, i)
		}
	}
	c.mu.Unlock()
	for _, i := range misses {
		o, err := c.res.decode(kvs[i])
		if err != nil {
			return nil, 0, apierrors.NewInternalError(err)
		}
		entries[kvs[i].Key], items[i] = decodedEntry{rev: kvs[i].ModRevision, obj: o}, o
	}
	c.mu.Lock()
	// Entries the broadcaster added meanwhile for newer revisions stay.
	for key, e := range c.entries {
		if cur, ok := entries[key]; ok && cur.rev < e.rev {
			entries[key] = e
		}
	}
	c.entries = entries
	c.mu.Unlock()
	return items, rev, nil
}

// decode is res.decode(kv), answered with a private copy of the cached
// object when the cache has kv's ModRevision (a copy costs a fraction of
// a JSON decode).
func (c *decodedCache) decode(kv cluster.KV) (object, error) {
	c.mu.Lock()
	e, ok := c.entries[kv.Key]
	c.mu.Unlock()
	if ok && e.rev == kv.ModRevision {
		return e.obj.DeepCopyObject().(object), nil
	}
	return c.res.decode(kv)
}

// offer caches an object the broadcaster decoded from a change at
// ModRevision rev, unless a newer one is cached already.
func (c *decodedCache) offer(key string, rev int64, o object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; !ok || e.rev < rev {
		c.entries[key] = decodedEntry{rev: rev, obj: o}
	}
}

// forget drops a key deleted at revision rev.
func (c *decodedCache) forget(key string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.rev < rev {
		delete(c.entries, key)
	}
}
