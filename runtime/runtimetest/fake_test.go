package runtimetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/daemonlet/daemonlet/runtime"
)

func TestFakeLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := testingclock.NewFakeClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	f := New(clk)
	pod := &runtime.Pod{UID: "u1", Name: "p", Namespace: "default", Revision: "r1", Spec: &corev1.PodSpec{}}
	c := &corev1.Container{Name: "app", Image: "img"}

	sb, err := f.RunSandbox(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateContainer(ctx, pod, sb, c, 0, false); !errdefs.IsNotFound(err) {
		t.Fatalf("create without image: got %v, want ErrNotFound", err)
	}
	f.FailPull("img", errdefs.ErrUnavailable)
	if _, err := f.EnsureImage(ctx, "img", corev1.PullIfNotPresent); !errdefs.IsUnavailable(err) {
		t.Fatalf("failing pull: got %v, want ErrUnavailable", err)
	}
	f.FailPull("img", nil)
	if pulled, err := f.EnsureImage(ctx, "img", corev1.PullIfNotPresent); err != nil || !pulled {
		t.Fatalf("pull: pulled=%v err=%v", pulled, err)
	}
	id, err := f.CreateContainer(ctx, pod, sb, c, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := f.CreateContainer(ctx, pod, sb, c, 0, false); again != id || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second create: id=%q err=%v", again, err)
	}
	if err := f.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, _ := f.ContainerStatus(ctx, id)
	if st.State != runtime.StateRunning || st.PID == 0 || st.SpecHash != runtime.ContainerSpecHash(c) {
		t.Fatalf("after start: %+v", st)
	}
	exited, err := f.WaitExit(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Second)
	if err := f.Exit(id, 3); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("WaitExit channel not closed after Exit")
	}
	st, _ = f.ContainerStatus(ctx, id)
	if st.State != runtime.StateExited || st.ExitCode != 3 || st.Reason != "Error" || !st.FinishedAt.Equal(clk.Now()) {
		t.Fatalf("after exit: %+v", st)
	}
	if err := f.Exit(id, 0); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exit of an exited container: %v", err)
	}
	if err := f.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ContainerStatus(ctx, id); !errdefs.IsNotFound(err) {
		t.Fatalf("status after remove: %v", err)
	}
}

func TestFakeBlockCreateHonoursContext(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	f := New(clk)
	f.AddImage("img")
	release := f.BlockCreate("app")
	defer release()
	pod := &runtime.Pod{UID: "u1", Name: "p", Namespace: "default", Spec: &corev1.PodSpec{}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := f.CreateContainer(ctx, pod, &runtime.Sandbox{}, &corev1.Container{Name: "app", Image: "img"}, 0, false)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked create after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked create ignored its context")
	}
}
