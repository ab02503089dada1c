// Package cluster is the server's storage: a flat key space of byte values
// with one store-wide revision, the model of etcd's v3 API, so that the
// embedded bbolt backend here and an etcd backend (go.etcd.io/etcd/client/v3)
// answer the server identically.
//
// # Semantics (the Store interface)
//
// Every successful Create, Update and Delete increments the store revision
// and is stamped with it; failed writes change nothing. Each key records the
// revision that created it (CreateRevision) and the one that last changed it
// (ModRevision), as etcd's mvccpb.KeyValue does; the server turns revisions
// into resourceVersions. Update and Delete take the ModRevision the caller
// read (0 for unconditional), which is etcd's compare-and-swap transaction.
// Watch delivers every change after a revision, in revision order, without
// gaps or duplicates; history older than the retained window is answered with
// ErrCompacted, which the server turns into 410 Gone, as etcd's compaction
// does for the Kubernetes API server. The conformance suite in clustertest
// pins these rules down for every backend.
//
// # Bucket tree (Bolt)
//
// Everything lives under one version root bucket, never at the file's top
// level, so that a future layout can sit beside v1 and a migration can move
// data between them (STYLE.md pitfall 5; the agent's store/ does the same).
//
//	v1/                                        schema root
//	├── meta/
//	│   ├── version           = "1"            schema version, decimal ASCII
//	│   ├── revision          = "<n>"          store revision of the last write, decimal ASCII
//	│   └── compactedRevision = "<n>"          revision of the newest dropped change (0: none dropped)
//	├── kv/
//	│   └── <key>             = kv record      current value of every live key
//	└── log/
//	    └── <revision>        = log record     one change per revision, the key is the
//	                                           revision as 8-byte big-endian so that
//	                                           bbolt's byte order is revision order
//
// The log holds exactly the revisions compactedRevision+1 .. revision, one
// entry each, since every write makes one change; Watch replays it to resume
// a watcher. It keeps at least BoltOptions.HistoryLimit changes: once it holds
// HistoryLimit plus a trim batch (an eighth of the limit, at most 1024), the
// write that crosses the mark deletes the oldest batch in its own transaction,
// so trimming costs a few deletes every batch writes instead of one per write.
//
// # Value encoding
//
// Values are opaque bytes to this package (the server's JSON objects), so the
// records are binary, to avoid re-encoding (and base64-inflating) objects of up
// to 3 MiB. Both start with a record version byte:
//
//	kv record:  0x01 | uvarint createRevision | uvarint modRevision | value
//	log record: 0x01 | type (0x01 put, 0x02 delete) | uvarint createRevision |
//	            uvarint len(key) | key | value
//
// A log record of a delete carries the last value of the key, so that a
// watcher can tell which object disappeared. Changing a record's layout bumps
// its version byte; a record whose version is newer than this binary knows is
// reported as errdefs.ErrFailedPrecondition, never misread, and a damaged one
// as errdefs.ErrDataLoss. Changing the bucket tree appends to the migrations
// slice (migrations.go) and bumps meta/version; OpenBolt runs pending
// migrations in one Update transaction and refuses a newer schema.
//
// # Concurrency
//
// Bolt is safe for concurrent use. Writes are serialised by a mutex held
// across the bbolt Update transaction and the publication of its event, so
// that watchers receive events in revision order and only after they are
// durable. A new watcher registers under the publication lock, which fixes the
// revision R up to which it must replay the log; every later event reaches it
// live, and is queued while the replay (a goroutine that reads the log in
// short transactions) runs. A live watcher costs no goroutine: it is a
// buffered channel in a map, filled by non-blocking sends from the writer; a
// watcher whose buffer is full is closed, and its caller resumes from the last
// revision it received.
package cluster
