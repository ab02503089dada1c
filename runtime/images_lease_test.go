package runtime

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// TestReleaseStaleImageLeases: an agent killed while unpacking an image
// leaves an active snapshot that only its lease holds. The next Runtime
// of the namespace releases that lease and the snapshot goes with it,
// while a pull or import of its own keeps its lease.
func TestReleaseStaleImageLeases(t *testing.T) {
	e := newTestEnv(t)
	ctx := namespaces.WithNamespace(context.Background(), e.cfg.Namespace)

	// The killed agent's unpack, as containerd's unpacker makes it.
	deadCtx, _, err := e.raw.WithLease(ctx, leases.WithRandomID(),
		leases.WithLabels(map[string]string{labelImageLease: "1-1"}))
	if err != nil {
		t.Fatal(err)
	}
	sn := e.raw.SnapshotService("overlayfs")
	if _, err := sn.Prepare(deadCtx, "extract-killed", ""); err != nil {
		t.Fatal(err)
	}
	// This Runtime's own pull, under way.
	ownCtx, done, err := e.rt.imageLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if _, err := sn.Prepare(ownCtx, "extract-own", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Remove(ctx, "extract-own") })

	if err := e.rt.ReleaseStaleImageLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Stat(ctx, "extract-killed"); !errdefs.IsNotFound(err) {
		t.Errorf("the killed agent's snapshot: %v, want it collected", err)
	}
	if _, err := sn.Stat(ctx, "extract-own"); err != nil {
		t.Errorf("this Runtime's own snapshot: %v, want it kept", err)
	}
	ls, err := e.raw.LeasesService().List(ctx, "labels."+`"`+labelImageLease+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Labels[labelImageLease] != e.rt.imageLeaseOwner {
		t.Errorf("image leases left: %+v, want only this Runtime's", ls)
	}
}
