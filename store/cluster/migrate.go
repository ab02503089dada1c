package cluster

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// CopyStore copies every key of src into dst, for moving a single server's
// Bolt store into etcd, and returns how many keys it copied.
//
// Values are copied byte for byte, but revisions are not: each key gets the
// revision of its Create in dst, in key order, so resourceVersions renumber
// (clients relist, as after an etcd restore) and src's watch history is not
// copied. The copy is one key per write, not one transaction, since etcd
// bounds a transaction's size; to keep a half-finished copy from mixing
// with live data, it refuses with errdefs.ErrFailedPrecondition, before
// writing anything, when dst already holds a key under any first path
// segment of src's keys ("/nodes/" for "/nodes/n1"). After a failure, delete
// those keys in dst and copy again. src must not change meanwhile (a Bolt
// store is locked by its opener, so no server can run on it).
func CopyStore(ctx context.Context, dst, src Store) (int, error) {
	kvs, _, err := src.List(ctx, "/")
	if err != nil {
		return 0, fmt.Errorf("copy store: list source: %w", err)
	}
	prefixes := map[string]bool{}
	for _, kv := range kvs {
		prefixes[firstSegment(kv.Key)] = true
	}
	for prefix := range prefixes {
		existing, _, err := dst.List(ctx, prefix)
		if err != nil {
			return 0, fmt.Errorf("copy store: list destination %s: %w", prefix, err)
		}
		if len(existing) > 0 {
			return 0, fmt.Errorf("copy store: destination already holds %d keys under %s (%s first): %w",
				len(existing), prefix, existing[0].Key, errdefs.ErrFailedPrecondition)
		}
	}
	for i, kv := range kvs {
		if _, err := dst.Create(ctx, kv.Key, kv.Value); err != nil {
			return i, fmt.Errorf("copy store: key %s (%d of %d copied): %w", kv.Key, i, len(kvs), err)
		}
	}
	return len(kvs), nil
}

// firstSegment returns the key's first path segment with its slashes:
// "/nodes/" for "/nodes/n1", the key itself when it has no second slash.
func firstSegment(key string) string {
	if i := strings.IndexByte(strings.TrimPrefix(key, "/"), '/'); i >= 0 {
		return key[:i+2]
	}
	return key
}
