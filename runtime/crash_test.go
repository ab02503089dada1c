package runtime

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
)

// interruptedCreate leaves what an agent killed inside CreateContainer
// leaves: the container's snapshot, held by a 24-hour lease of the dead
// client, and no container. leaseLabels and snapLabels are those of the
// lease and the snapshot.
func (e *testEnv) interruptedCreate(t *testing.T, id string, leaseLabels, snapLabels map[string]string) leases.Lease {
	t.Helper()
	ctx := e.rt.ctx(context.Background())
	lm := e.raw.LeasesService()
	l, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour), leases.WithLabels(leaseLabels))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lm.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("delete lease: %v", err)
		}
	})
	img, err := e.raw.GetImage(ctx, normalizeRef(testImageRef))
	if err != nil {
		t.Fatal(err)
	}
	// The create dies after the snapshot: the option after it fails, and
	// the lease in the context keeps the client from cleaning anything.
	_, err = e.raw.NewContainer(leases.WithLease(ctx, l.ID), id,
		client.WithNewSnapshot(id, img, snapshots.WithLabels(snapLabels)),
		func(context.Context, *client.Client, *containers.Container) error {
			return fmt.Errorf("agent killed: %w", errdefs.ErrAborted)
		})
	if !errdefs.IsAborted(err) {
		t.Fatalf("interrupted create: %v", err)
	}
	if _, err := e.raw.SnapshotService("").Stat(ctx, id); err != nil {
		t.Fatalf("the interrupted create left no snapshot: %v", err)
	}
	return l
}

// createLeases returns the create leases left for a container ID.
func (e *testEnv) createLeases(t *testing.T, id string) []leases.Lease {
	t.Helper()
	ls, err := e.raw.LeasesService().List(e.rt.ctx(context.Background()), fmt.Sprintf("labels.%q==%q", labelCreateLease, id))
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// TestCreateAfterInterruptedCreate checks that the snapshot of a create an
// earlier agent did not finish neither passes for the container nor
// blocks the retry, and that removal leaves no snapshot.
func TestCreateAfterInterruptedCreate(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	pod := newPod("orphan", "sleep")
	id := ContainerID(pod.UID, "main", 0)
	// An unlabelled snapshot, as an agent before create leases left it.
	e.interruptedCreate(t, id, nil, nil)

	sb, got := e.run(t, pod)
	if got != id {
		t.Fatalf("id = %s, want %s", got, id)
	}
	st, err := e.rt.ContainerStatus(ctx, id)
	if err != nil || st.State != StateRunning {
		t.Fatalf("status = %+v, %v; want running", st, err)
	}
	if ls := e.createLeases(t, id); len(ls) != 0 {
		t.Errorf("create leases left after a finished create: %v", ls)
	}
	// A second create of the same attempt finds the container.
	if again, err := e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false); again != id || !errdefs.IsAlreadyExists(err) {
		t.Errorf("second create = %q, %v; want %s, AlreadyExists", again, err, id)
	}
	e.remove(t, pod, id)
	e.assertNoTrace(t, pod, sb, id)
}

// TestRemoveAfterInterruptedCreate checks that a pod no longer wanted after
// an interrupted create leaves no snapshot and no create lease, whether
// the container or the sandbox is removed.
func TestRemoveAfterInterruptedCreate(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	t.Run("remove container", func(t *testing.T) {
		pod := newPod("orphan-rc", "sleep")
		id := ContainerID(pod.UID, "main", 0)
		e.interruptedCreate(t, id, map[string]string{labelCreateLease: id}, nil)
		if ls := e.createLeases(t, id); len(ls) != 1 {
			t.Fatalf("create leases before removal: %v, want the one of the interrupted create", ls)
		}
		if err := e.rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		e.assertNoTrace(t, pod, nil, id)
		if ls := e.createLeases(t, id); len(ls) != 0 {
			t.Errorf("create leases left: %v", ls)
		}
	})
	t.Run("remove sandbox", func(t *testing.T) {
		pod := newPod("orphan-rs", "sleep")
		pod.Spec.Containers = append(pod.Spec.Containers, pod.Spec.Containers[0])
		pod.Spec.Containers[1].Name = "side"
		sb, kept := e.run(t, pod)
		id := ContainerID(pod.UID, "side", 0)
		e.interruptedCreate(t, id, map[string]string{labelCreateLease: id}, map[string]string{LabelPodUID: pod.UID})
		// The sweep spares the snapshot of a container that exists.
		if err := e.rt.removeOrphanSnapshots(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.raw.SnapshotService("").Stat(e.rt.ctx(ctx), kept); err != nil {
			t.Errorf("snapshot of the running container %s: %v", kept, err)
		}
		if err := e.rt.StopContainer(ctx, kept, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := e.rt.RemoveContainer(ctx, kept); err != nil {
			t.Fatal(err)
		}
		if err := e.rt.RemoveSandbox(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		e.assertNoTrace(t, pod, sb, id, kept)
		if ls := e.createLeases(t, id); len(ls) != 0 {
			t.Errorf("create leases left: %v", ls)
		}
	})
}

// TestStartAfterInterruptedStart checks that a task an earlier agent
// created but did not live to start does not block the start.
func TestStartAfterInterruptedStart(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	pod := newPod("unstarted", "sleep")
	sb, err := e.rt.RunSandbox(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
	if err != nil {
		t.Fatal(err)
	}
	cont, err := e.raw.LoadContainer(e.rt.ctx(ctx), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cont.NewTask(e.rt.ctx(ctx), cio.NullIO); err != nil {
		t.Fatal(err)
	}
	if st, err := e.rt.ContainerStatus(ctx, id); err != nil || st.State != StateCreated {
		t.Fatalf("status = %+v, %v; want created", st, err)
	}
	if err := e.rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	if st, err := e.rt.ContainerStatus(ctx, id); err != nil || st.State != StateRunning {
		t.Fatalf("status = %+v, %v; want running", st, err)
	}
	// The new task logs through the log driver, as the lost one did not.
	e.readLog(t, pod, "main", 0, "sleep forever")
	if err := e.rt.StartContainer(ctx, id); !errdefs.IsAlreadyExists(err) {
		t.Errorf("start of a running container = %v, want AlreadyExists", err)
	}
	e.remove(t, pod, id)
	e.assertNoTrace(t, pod, sb, id)
}
