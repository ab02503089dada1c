package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// samplePod returns a pod record with every field set, so that a round trip
// that drops a field is caught.
func samplePod(uid string) PodRecord {
	return PodRecord{
		UID:       uid,
		Namespace: "kube-system",
		Name:      "fluentd-" + uid,
		Owner:     "kube-system/fluentd",
		Source:    "server",
		Revision:  "6d4b8f7c9",
		CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		Containers: map[string]ContainerRecord{
			"fluentd": {
				RestartCount:   4,
				LastExitCode:   137,
				LastFinishedAt: time.Date(2026, 3, 1, 12, 5, 0, 1, time.UTC),
				BackOff:        80 * time.Second,
				BackOffUntil:   time.Date(2026, 3, 1, 12, 6, 20, 1, time.UTC),
			},
			"sidecar": {LastExitCode: -1},
		},
		Terminating: true,
	}
}

// assertPod fails the test unless got equals want field by field.
func assertPod(t *testing.T, got, want PodRecord) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("pod record\n got: %+v\nwant: %+v", got, want)
	}
}

func TestPodRoundTrip(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	want := samplePod("uid-1")
	if err := db.PutPod(want); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetPod("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	assertPod(t, got, want)

	// PutPod replaces the whole record: a container dropped from the record
	// must not survive from the previous write.
	want.Revision = "new"
	want.Terminating = false
	want.Containers = map[string]ContainerRecord{"fluentd": {RestartCount: 5}}
	if err := db.PutPod(want); err != nil {
		t.Fatal(err)
	}
	got, err = db.GetPod("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	assertPod(t, got, want)

	minimal := PodRecord{UID: "uid-0"}
	if err := db.PutPod(minimal); err != nil {
		t.Fatal(err)
	}
	pods, errs, err := db.ListPods()
	if err != nil || len(errs) != 0 {
		t.Fatalf("ListPods: %v, %v", errs, err)
	}
	if len(pods) != 2 {
		t.Fatalf("ListPods returned %d pods, want 2", len(pods))
	}
	assertPod(t, pods[0], minimal)
	assertPod(t, pods[1], want)
}

func TestPutPodRejectsEmptyUID(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	if err := db.PutPod(PodRecord{Name: "x"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("PutPod without UID error = %v, want ErrInvalidArgument", err)
	}
}

func TestGetPodNotFound(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	if _, err := db.GetPod("missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetPod(missing) error = %v, want ErrNotFound", err)
	}
}

func TestDeletePod(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	for _, uid := range []string{"uid-1", "uid-2"} {
		if err := db.PutPod(samplePod(uid)); err != nil {
			t.Fatal(err)
		}
	}
	// A key stored beside the record, as later per-pod data will be, must go
	// with the pod.
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return putRaw(tx, []byte("x"), "pods", "uid-1", "events")
	}); err != nil {
		t.Fatal(err)
	}

	if err := db.DeletePod("uid-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPod("uid-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetPod after delete error = %v, want ErrNotFound", err)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoot).Bucket(bucketPods).Bucket([]byte("uid-1")) != nil {
			t.Error("pod bucket survived DeletePod")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePod("uid-1"); err != nil {
		t.Errorf("second DeletePod: %v, want nil (idempotent)", err)
	}
	if err := db.DeletePod(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("DeletePod(\"\") error = %v, want ErrInvalidArgument", err)
	}
	if _, err := db.GetPod("uid-2"); err != nil {
		t.Errorf("other pod lost: %v", err)
	}
}

func TestListPodsReportsCorruptRecordsPerKey(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	good := []PodRecord{samplePod("uid-a"), samplePod("uid-z")}
	for _, p := range good {
		if err := db.PutPod(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, raw := range []struct {
			value []byte
			path  []string
		}{
			{[]byte("not json"), []string{"pods", "uid-garbage", "record"}},
			{[]byte(`{"v":2,"data":{"name":"from-the-future"}}`), []string{"pods", "uid-newer", "record"}},
			{[]byte(`{"data":{"name":"no-version"}}`), []string{"pods", "uid-unversioned", "record"}},
			{[]byte(`{"v":1,"data":{"containers":"not a map"}}`), []string{"pods", "uid-wrongtype", "record"}},
			{[]byte("x"), []string{"pods", "uid-norecord", "events"}},
			{[]byte("x"), []string{"pods", "uid-stray"}},
		} {
			if err := putRaw(tx, raw.value, raw.path...); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	pods, errs, err := db.ListPods()
	if err != nil {
		t.Fatalf("ListPods: %v", err)
	}
	if len(pods) != 2 {
		t.Fatalf("ListPods loaded %d pods, want the 2 good ones", len(pods))
	}
	assertPod(t, pods[0], good[0])
	assertPod(t, pods[1], good[1])
	wantClass := map[string]error{
		"uid-garbage":     errdefs.ErrDataLoss,
		"uid-newer":       errdefs.ErrFailedPrecondition,
		"uid-unversioned": errdefs.ErrDataLoss,
		"uid-wrongtype":   errdefs.ErrDataLoss,
		"uid-norecord":    errdefs.ErrDataLoss,
		"uid-stray":       errdefs.ErrDataLoss,
	}
	checkErrorMap(t, errs, wantClass)

	if _, err := db.GetPod("uid-garbage"); !errors.Is(err, errdefs.ErrDataLoss) {
		t.Errorf("GetPod of a corrupt record error = %v, want ErrDataLoss", err)
	}

	// The agent clears what was reported: by deleting, or by writing a fresh
	// record over a stray value.
	for uid := range wantClass {
		if uid == "uid-stray" {
			continue
		}
		if err := db.DeletePod(uid); err != nil {
			t.Fatalf("DeletePod(%s): %v", uid, err)
		}
	}
	healed := samplePod("uid-stray")
	if err := db.PutPod(healed); err != nil {
		t.Fatalf("PutPod over a stray value: %v", err)
	}
	pods, errs, err = db.ListPods()
	if err != nil || len(errs) != 0 {
		t.Fatalf("ListPods after cleanup: %v, %v", errs, err)
	}
	if len(pods) != 3 {
		t.Errorf("ListPods after cleanup returned %d pods, want 3", len(pods))
	}
}

func TestPodDecodeIgnoresUnknownFields(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	// As a newer binary that only added fields would write it.
	raw := `{"v":1,"checksum":"abc","data":{"name":"p","futureField":{"x":1},` +
		`"containers":{"c":{"restartCount":2,"backOffNs":10000000000,"futureCounter":7}}}}`
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return putRaw(tx, []byte(raw), "pods", "uid-1", "record")
	}); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetPod("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	assertPod(t, got, PodRecord{
		UID:        "uid-1",
		Name:       "p",
		Containers: map[string]ContainerRecord{"c": {RestartCount: 2, BackOff: 10 * time.Second}},
	})
}

// checkErrorMap fails the test unless errs has exactly the keys of want, each
// error carrying the class want gives it.
func checkErrorMap(t *testing.T, errs map[string]error, want map[string]error) {
	t.Helper()
	for key, class := range want {
		err, ok := errs[key]
		switch {
		case !ok:
			t.Errorf("no error reported for %s", key)
		case !errors.Is(err, class):
			t.Errorf("error for %s = %v, want class %v", key, err, class)
		}
	}
	for key, err := range errs {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected error for %s: %v", key, err)
		}
	}
}
