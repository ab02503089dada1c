package cluster_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// fillBolt makes a Bolt store with keys under several prefixes, some
// updated and one deleted, so that its revisions do not match key order.
func fillBolt(t *testing.T) (*cluster.Bolt, map[string]string) {
	t.Helper()
	ctx := context.Background()
	src, err := cluster.OpenBolt(t.TempDir()+"/cluster.db", cluster.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	want := map[string]string{}
	for i := range 5 {
		for _, prefix := range []string{"/nodes/", "/pods/default/", "/daemonsets/default/"} {
			key := fmt.Sprintf("%sk%d", prefix, i)
			if _, err := src.Create(ctx, key, []byte("v1 "+key)); err != nil {
				t.Fatal(err)
			}
			want[key] = "v1 " + key
		}
	}
	if _, err := src.Update(ctx, "/nodes/k1", []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	want["/nodes/k1"] = "v2"
	if _, _, err := src.Delete(ctx, "/pods/default/k2", 0); err != nil {
		t.Fatal(err)
	}
	delete(want, "/pods/default/k2")
	return src, want
}

// checkCopy runs CopyStore and checks that it copied copies keys and that
// dst then holds exactly want.
func checkCopy(t *testing.T, dst, src cluster.Store, copies int, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	n, err := cluster.CopyStore(ctx, dst, src)
	if err != nil {
		t.Fatalf("CopyStore: %v", err)
	}
	if n != copies {
		t.Errorf("copied %d keys, want %d", n, copies)
	}
	got, _, err := dst.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("destination holds %d keys, want %d", len(got), len(want))
	}
	for _, kv := range got {
		if want[kv.Key] != string(kv.Value) {
			t.Errorf("key %s = %q, want %q", kv.Key, kv.Value, want[kv.Key])
		}
	}
	// A second copy would mix two generations of objects: refused before
	// any write.
	rev := dst.Revision()
	if _, err := cluster.CopyStore(ctx, dst, src); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second CopyStore: %v, want a failed precondition", err)
	}
	if dst.Revision() != rev {
		t.Errorf("the refused copy wrote: revision %d → %d", rev, dst.Revision())
	}
}

func TestCopyStoreBolt(t *testing.T) {
	src, want := fillBolt(t)
	dst, err := cluster.OpenBolt(t.TempDir()+"/cluster.db", cluster.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	checkCopy(t, dst, src, len(want), want)
}

func TestCopyStoreBoltToEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	src, want := fillBolt(t)
	dst := openEtcd(t, c.Endpoints(), "/migrated")
	// Keys outside src's prefixes, such as a running server's leader
	// election, do not block the copy.
	if _, err := dst.Create(context.Background(), "/leader/x", []byte("server-a")); err != nil {
		t.Fatal(err)
	}
	copies := len(want)
	want["/leader/x"] = "server-a"
	checkCopy(t, dst, src, copies, want)
}
