package store

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestReplaceObjectsRoundTrip(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	at := time.Date(2026, 3, 1, 12, 0, 0, 42, time.UTC)
	recs := []ObjectRecord{
		{Kind: KindSecret, Key: "default/s", Object: []byte(`{"data":{"k":"dg=="}}`), UpdatedAt: at},
		{Kind: KindConfigMap, Key: "default/c", Object: []byte(`{"data":{"k":"v"}}`), UpdatedAt: at},
	}
	if err := db.ReplaceObjects("file", recs); err != nil {
		t.Fatal(err)
	}
	if err := db.ReplaceObjects("server", []ObjectRecord{{Kind: KindConfigMap, Key: "ns/x", Object: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	got, errs, err := db.ListObjects()
	if err != nil || errs != nil {
		t.Fatalf("ListObjects: %v, %v", errs, err)
	}
	want := []ObjectRecord{
		{Source: "file", Kind: KindConfigMap, Key: "default/c", Object: recs[1].Object, UpdatedAt: at},
		{Source: "file", Kind: KindSecret, Key: "default/s", Object: recs[0].Object, UpdatedAt: at},
		{Source: "server", Kind: KindConfigMap, Key: "ns/x", Object: []byte("{}")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListObjects\n got %+v\nwant %+v", got, want)
	}
	// A full set replaces the old one; an empty set removes the source.
	if err := db.ReplaceObjects("file", nil); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := db.ListObjects(); len(got) != 1 || got[0].Source != "server" {
		t.Errorf("after removing source file: %+v", got)
	}
}

func TestReplaceObjectsRejectsBadInput(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	for name, tc := range map[string]struct {
		source string
		recs   []ObjectRecord
	}{
		"empty source":  {"", nil},
		"slash":         {"a/b", nil},
		"other source":  {"file", []ObjectRecord{{Source: "http", Kind: KindConfigMap, Key: "a/b"}}},
		"unknown kind":  {"file", []ObjectRecord{{Kind: "Pod", Key: "a/b"}}},
		"empty key":     {"file", []ObjectRecord{{Kind: KindSecret}}},
		"duplicate key": {"file", []ObjectRecord{{Kind: KindSecret, Key: "a/b"}, {Kind: KindSecret, Key: "a/b"}}},
	} {
		if err := db.ReplaceObjects(tc.source, tc.recs); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: ReplaceObjects = %v, want ErrInvalidArgument", name, err)
		}
	}
}

// TestSecretsEncryptedAtRest reads state.db's raw bytes after storing a
// Secret: the value must not appear, the key file must be private, and a
// different key must fail to decrypt (reported per key, not for the list).
func TestSecretsEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	value := []byte("hunter2-the-very-secret-password")
	if err := db.ReplaceObjects("file", []ObjectRecord{
		{Kind: KindSecret, Key: "default/s", Object: value},
		{Kind: KindConfigMap, Key: "default/c", Object: []byte("plain-config-value")},
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Values are base64 in the JSON envelope, so look for both forms.
	b64 := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }
	if bytes.Contains(raw, value) || bytes.Contains(raw, b64(value)) {
		t.Error("state.db contains the Secret's value in plain text")
	}
	if !bytes.Contains(raw, b64([]byte("plain-config-value"))) {
		t.Error("state.db does not contain the ConfigMap; the raw read checks nothing")
	}
	fi, err := os.Stat(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != secretKeySize {
		t.Errorf("secret.key mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), secretKeySize)
	}
	if got, errs, err := db.ListObjects(); err != nil || errs != nil || len(got) != 2 || !bytes.Equal(got[1].Object, value) {
		t.Errorf("ListObjects = %+v, %v, %v; want the Secret decrypted", got, errs, err)
	}

	// The same file under another key: the ConfigMap still reads, the Secret
	// is a per-key data-loss error.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.SecretKeyPath = filepath.Join(dir, "other.key")
	db2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db2.Close() })
	got, errs, err := db2.ListObjects()
	if err != nil || len(got) != 1 || got[0].Kind != KindConfigMap {
		t.Errorf("ListObjects under another key = %+v, %v", got, err)
	}
	if e := errs["file/Secret/default/s"]; !errors.Is(e, errdefs.ErrDataLoss) {
		t.Errorf("per-key error for the Secret = %v (all: %v), want ErrDataLoss", e, errs)
	}
}
