package runtime

import (
	"context"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/daemonlet/daemonlet/internal/registrytest"
	corev1 "k8s.io/api/core/v1"
)

// TestPullPolicies pushes the test image to a real registry on 127.0.0.1
// and pulls it back under each policy.
func TestPullPolicies(t *testing.T) {
	e := newTestEnv(t)
	addr := registrytest.Start(t)
	ctx := e.rt.ctx(context.Background())
	img, err := e.raw.GetImage(ctx, testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	remote := addr + "/daemonlet/testimage:v1"
	resolver := docker.NewResolver(docker.ResolverOptions{})
	if err := e.raw.Push(ctx, remote, img.Target(), client.WithResolver(resolver)); err != nil {
		t.Fatalf("push to the test registry: %v", err)
	}

	if _, err := e.rt.EnsureImage(ctx, remote, corev1.PullNever); !errdefs.IsNotFound(err) {
		t.Fatalf("Never on an absent image: %v, want NotFound", err)
	}
	pulled, err := e.rt.EnsureImage(ctx, remote, corev1.PullIfNotPresent)
	if err != nil || !pulled {
		t.Fatalf("IfNotPresent on an absent image: pulled=%v err=%v", pulled, err)
	}
	pulled, err = e.rt.EnsureImage(ctx, remote, corev1.PullIfNotPresent)
	if err != nil || pulled {
		t.Fatalf("IfNotPresent on a present image: pulled=%v err=%v", pulled, err)
	}
	pulled, err = e.rt.EnsureImage(ctx, remote, corev1.PullAlways)
	if err != nil || !pulled {
		t.Fatalf("Always: pulled=%v err=%v", pulled, err)
	}
	if pulled, err := e.rt.EnsureImage(ctx, remote, corev1.PullNever); err != nil || pulled {
		t.Fatalf("Never on a present image: pulled=%v err=%v", pulled, err)
	}

	// The pulled image runs.
	pod := newPod("pulled", "exit", "0")
	pod.Spec.Containers[0].Image = remote
	_, id := e.run(t, pod)
	if st := e.waitExited(t, id, 20*time.Second); st.ExitCode != 0 {
		t.Errorf("exit %d", st.ExitCode)
	}

	// A registry that has no such image answers NotFound.
	if _, err := e.rt.EnsureImage(ctx, addr+"/daemonlet/absent:v1", corev1.PullIfNotPresent); !errdefs.IsNotFound(err) {
		t.Errorf("pull of an absent image: %v, want NotFound", err)
	}
}
