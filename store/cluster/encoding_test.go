package cluster

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestKVRecordRoundTrip(t *testing.T) {
	for _, kv := range []KV{
		{Key: "/pods/ns/p", Value: []byte(`{"kind":"Pod"}`), CreateRevision: 3, ModRevision: 1 << 40},
		{Key: "/empty", Value: []byte{}, CreateRevision: 1, ModRevision: 1},
	} {
		got, err := decodeKV(kv.Key, encodeKV(kv))
		if err != nil {
			t.Fatalf("decode %+v: %v", kv, err)
		}
		if got.Key != kv.Key || string(got.Value) != string(kv.Value) ||
			got.CreateRevision != kv.CreateRevision || got.ModRevision != kv.ModRevision {
			t.Errorf("round trip of %+v = %+v", kv, got)
		}
	}
}

func TestLogRecordRoundTrip(t *testing.T) {
	for _, ev := range []Event{
		{Type: EventPut, KV: KV{Key: "/nodes/n", Value: []byte("v"), CreateRevision: 2, ModRevision: 9}, Revision: 9},
		{Type: EventDelete, KV: KV{Key: "/nodes/n", Value: []byte("last"), CreateRevision: 2, ModRevision: 10}, Revision: 10},
	} {
		got, err := decodeLog(ev.Revision, encodeLog(ev))
		if err != nil {
			t.Fatalf("decode %+v: %v", ev, err)
		}
		if got.Type != ev.Type || got.Revision != ev.Revision || got.KV.Key != ev.KV.Key ||
			string(got.KV.Value) != string(ev.KV.Value) || got.KV.CreateRevision != ev.KV.CreateRevision ||
			got.KV.ModRevision != ev.KV.ModRevision {
			t.Errorf("round trip of %+v = %+v", ev, got)
		}
	}
}

func TestDecodeRefusesBadRecords(t *testing.T) {
	good := encodeLog(Event{Type: EventPut, KV: KV{Key: "/k", Value: []byte("v"), CreateRevision: 1, ModRevision: 1}, Revision: 1})
	newer := append([]byte{recordVersion + 1}, good[1:]...)
	for _, tc := range []struct {
		name string
		raw  []byte
		want func(error) bool
	}{
		{"empty", nil, errdefs.IsDataLoss},
		{"version 0", []byte{0, 1, 1, 2, '/', 'k'}, errdefs.IsDataLoss},
		{"newer version", newer, errdefs.IsFailedPrecondition},
		{"unknown type", []byte{recordVersion, 9, 1, 2, '/', 'k'}, errdefs.IsDataLoss},
		{"key longer than record", []byte{recordVersion, logPut, 1, 50, '/', 'k'}, errdefs.IsDataLoss},
		{"bad varint", []byte{recordVersion, logPut, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, errdefs.IsDataLoss},
	} {
		if _, err := decodeLog(1, tc.raw); !tc.want(err) {
			t.Errorf("decodeLog(%s) error = %v, want another class", tc.name, err)
		}
	}
	if _, err := decodeKV("/k", []byte{recordVersion + 1, 1, 1}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("decodeKV of a newer record error = %v, want FailedPrecondition", err)
	}
	if _, err := decodeKV("/k", []byte{recordVersion, 1}); !errdefs.IsDataLoss(err) {
		t.Errorf("decodeKV of a truncated record error = %v, want DataLoss", err)
	}
}
