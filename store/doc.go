// Package store keeps the agent's node-local state in one bbolt file, so that
// a node whose server is unreachable, even after a reboot, keeps running what
// it was told last and keeps its pods' restart counts and crash back-offs.
//
// # Bucket tree
//
// Everything lives under one version root bucket; nothing is ever put at the
// file's top level, so that a future layout can sit beside v1 and a migration
// can move data between them (containerd had to move sandboxes out of its root
// later; see STYLE.md pitfall 5).
//
//	v1/                                  schema root
//	├── meta/
//	│   └── version          = "2"       schema version, decimal ASCII integer
//	├── desired/                         last-known desired state, written before it is acted on
//	│   └── <source>/                    one bucket per source ("server", "file", "http", ...),
//	│       │                            replaced whole by ReplaceDesired
//	│       └── <namespace/name> = desiredV1 envelope (see DesiredRecord)
//	├── pods/                            one bucket per pod this agent created
//	│   └── <uid>/
//	│       └── record       = podV1 envelope (see PodRecord)
//	└── objects/                         last-known ConfigMaps and Secrets (schema 2)
//	    └── <source>/                    replaced whole by ReplaceObjects
//	        └── <kind>/<namespace>/<name> = objectV1 envelope (see ObjectRecord)
//
// Secrets are sealed with AES-256-GCM under a node-local key file
// (Options.SecretKeyPath, default secret.key beside the store file, 0600,
// created on first use), so that a copy of the store alone does not reveal
// them; the ciphertext is bound to its source and key.
//
// Each pod has its own bucket, not a single key, so that per-pod data added
// later (events, hook state) becomes a sibling key of record and is removed
// with the pod by DeletePod, without a layout migration.
// Source names must not contain "/": ListDesired reports undecodable records
// under "<source>/<key>", which must stay unambiguous.
//
// Facts that containerd already knows (which containers and tasks exist, their
// labels, the spec hash) are deliberately not duplicated here; the agent reads
// them from containerd.
//
// # Value encoding
//
// Every value is a versioned JSON envelope:
//
//	{"v":1,"data":{...}}
//
// JSON envelopes were chosen over containerd's one-key-per-field layout
// because records are always read and written whole and PodRecord nests a
// per-container map, which would need a bucket per container. The fields of
// data are defined by unexported wire structs (desiredV1, podV1, containerV1)
// rather than by the exported Go types, so renaming a Go field cannot silently
// change the file format. Times are RFC 3339 with nanoseconds, durations are
// integer nanoseconds, DesiredRecord.Object is base64 because it is opaque
// bytes to this package. Zero values are omitted, so an empty
// PodRecord.Containers map reads back as nil.
//
// Compatibility rules:
//   - Adding an optional field needs neither a new envelope version nor a
//     migration: decoding ignores unknown fields, so an older binary reads
//     records written by a newer one.
//   - Changing the meaning or type of a field bumps the envelope version "v".
//     A record whose "v" is newer than this binary knows is reported as a
//     per-key error by the List functions, never silently misread.
//   - Changing the bucket tree appends a function to the migrations slice and
//     bumps the schema version in v1/meta/version. Open runs the pending
//     migrations in one Update transaction and refuses a file whose schema
//     version is newer than this binary knows.
//
// # Errors
//
// Errors carry github.com/containerd/errdefs classes: ErrNotFound for an
// absent pod, ErrInvalidArgument for bad input, ErrUnavailable when another
// process holds the file lock, ErrFailedPrecondition for a file or record
// written by a newer daemonlet (or a bbolt file that is not ours), and
// ErrDataLoss for damaged data (undecodable records, missing buckets, a failed
// Check).
//
// # Concurrency
//
// A DB is safe for concurrent use by several goroutines: bbolt serialises
// writers and gives readers a snapshot. The file is locked exclusively while
// open, so only one agent process can use it at a time. Values are copied out
// of transactions before they are decoded, and encoded before a write
// transaction starts, to keep transactions short.
package store
