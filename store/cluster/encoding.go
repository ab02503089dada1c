package cluster

import (
	"encoding/binary"
	"fmt"

	"github.com/containerd/errdefs"
)

// recordVersion is the version byte this binary writes and the newest it reads.
const recordVersion = 1

// Type bytes of a log record.
const (
	logPut    = 1
	logDelete = 2
)

// revisionKey encodes a revision as a log bucket key: 8-byte big-endian, so
// that bbolt's byte order is revision order.
func revisionKey(rev int64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(rev))
}

// encodeKV encodes the kv record of doc.go.
func encodeKV(kv KV) []byte {
	out := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(kv.Value))
	out = append(out, recordVersion)
	out = binary.AppendUvarint(out, uint64(kv.CreateRevision))
	out = binary.AppendUvarint(out, uint64(kv.ModRevision))
	return append(out, kv.Value...)
}

// decodeKV decodes a kv record read from bbolt into a KV that owns its
// bytes, so that it outlives the transaction.
func decodeKV(key string, raw []byte) (KV, error) {
	r := recordReader{raw: raw}
	r.version()
	create := r.uvarint()
	mod := r.uvarint()
	if r.err != nil {
		return KV{}, fmt.Errorf("decode kv record of %q: %w", key, r.err)
	}
	return KV{Key: key, Value: r.rest(), CreateRevision: create, ModRevision: mod}, nil
}

// encodeLog encodes the log record of ev as drawn in doc.go; ev.Revision is
// the record's bucket key and ev.KV.ModRevision equals it, so neither is stored.
func encodeLog(ev Event) []byte {
	typ := byte(logPut)
	if ev.Type == EventDelete {
		typ = logDelete
	}
	out := make([]byte, 0, 2+2*binary.MaxVarintLen64+len(ev.KV.Key)+len(ev.KV.Value))
	out = append(out, recordVersion, typ)
	out = binary.AppendUvarint(out, uint64(ev.KV.CreateRevision))
	out = binary.AppendUvarint(out, uint64(len(ev.KV.Key)))
	out = append(out, ev.KV.Key...)
	return append(out, ev.KV.Value...)
}

// decodeLog decodes the log record stored under revision rev into an Event
// that owns its bytes.
func decodeLog(rev int64, raw []byte) (Event, error) {
	r := recordReader{raw: raw}
	r.version()
	var typ EventType
	switch t := r.byte(); {
	case r.err != nil:
	case t == logPut:
		typ = EventPut
	case t == logDelete:
		typ = EventDelete
	default:
		r.fail("unknown change type %d", t)
	}
	create := r.uvarint()
	key := string(r.bytes(r.uvarint()))
	if r.err != nil {
		return Event{}, fmt.Errorf("decode log record of revision %d: %w", rev, r.err)
	}
	return Event{
		Type:     typ,
		KV:       KV{Key: key, Value: r.rest(), CreateRevision: create, ModRevision: rev},
		Revision: rev,
	}, nil
}

// recordReader decodes a record field by field and keeps the first error, so
// that decoders check once at the end.
type recordReader struct {
	raw []byte
	err error
}

// fail records a damaged-record error unless one is already recorded.
func (r *recordReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format+": %w", append(args, errdefs.ErrDataLoss)...)
	}
}

// version consumes the record version byte and refuses versions this binary
// cannot read.
func (r *recordReader) version() {
	v := r.byte()
	switch {
	case r.err != nil:
	case v == 0:
		r.fail("record version 0")
	case v > recordVersion:
		r.err = fmt.Errorf("record version %d is newer than this binary reads (%d): %w",
			v, recordVersion, errdefs.ErrFailedPrecondition)
	}
}

func (r *recordReader) byte() byte {
	b := r.bytes(1)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func (r *recordReader) uvarint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.raw)
	if n <= 0 || v > 1<<63-1 {
		r.fail("bad varint")
		return 0
	}
	r.raw = r.raw[n:]
	return int64(v)
}

// bytes consumes n bytes without copying them.
func (r *recordReader) bytes(n int64) []byte {
	if r.err != nil {
		return nil
	}
	if n > int64(len(r.raw)) {
		r.fail("record truncated")
		return nil
	}
	b := r.raw[:n]
	r.raw = r.raw[n:]
	return b
}

// rest returns a copy of the remaining bytes: the value, which must not point
// into bbolt's memory map once the transaction ends.
func (r *recordReader) rest() []byte {
	return append([]byte{}, r.raw...)
}
