package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
)

// ParseImageRef normalises an image reference as kubelet and containerd's
// CRI do ("busybox" is docker.io/library/busybox:latest); a malformed one is
// an ErrInvalidArgument.
func ParseImageRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	return named.String(), nil
}

// normalizeRef is ParseImageRef for references already validated.
func normalizeRef(ref string) string {
	n, err := ParseImageRef(ref)
	if err != nil {
		return ref
	}
	return n
}

// EnsureImage makes the image present under the pull policy: Never only
// checks (ErrNotFound when absent, kubelet's ErrImageNeverPull),
// IfNotPresent pulls when absent, Always pulls (resolving the tag again).
// Registries on localhost are reached over plain HTTP. It returns whether
// it pulled.
func (r *Runtime) EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy) (bool, error) {
	ctx = r.ctx(ctx)
	name, err := ParseImageRef(ref)
	if err != nil {
		return false, err
	}
	if policy != corev1.PullAlways {
		_, err := r.client.GetImage(ctx, name)
		if err == nil {
			return false, nil
		}
		if !errdefs.IsNotFound(err) {
			return false, fmt.Errorf("image %s: %w", ref, err)
		}
		if policy == corev1.PullNever {
			return false, fmt.Errorf("image %s is not present and imagePullPolicy is Never: %w", ref, errdefs.ErrNotFound)
		}
	}
	ctx, done, err := r.imageLease(ctx)
	if err != nil {
		return false, fmt.Errorf("pull image %s: %w", ref, err)
	}
	defer done()
	if _, err := r.client.Pull(ctx, name, client.WithPullUnpack); err != nil {
		return false, fmt.Errorf("pull image %s: %w", ref, classifyPullError(err))
	}
	return true, nil
}

// classifyPullError keeps containerd's class when it has one; a registry
// that cannot be reached or answers with an error is ErrUnavailable.
func classifyPullError(err error) error {
	for _, known := range []func(error) bool{errdefs.IsNotFound, errdefs.IsInvalidArgument, errdefs.IsUnauthorized, errdefs.IsCanceled, errdefs.IsDeadlineExceeded} {
		if known(err) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
}

// ImportImage imports an OCI or docker-archive tar (as `docker save` or
// `ctr export` write it) and unpacks its images; it returns their names.
func (r *Runtime) ImportImage(ctx context.Context, path string) ([]string, error) {
	ctx = r.ctx(ctx)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	defer f.Close()
	return r.importFrom(ctx, path, f)
}

func (r *Runtime) importFrom(ctx context.Context, path string, rd io.Reader) ([]string, error) {
	ctx, done, err := r.imageLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", path, err)
	}
	defer done()
	imgs, err := r.client.Import(ctx, rd, client.WithSkipDigestRef(func(name string) bool { return name != "" }))
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w: %w", path, errdefs.ErrInvalidArgument, err)
	}
	names := make([]string, 0, len(imgs))
	for _, i := range imgs {
		img := client.NewImage(r.client, i)
		if err := img.Unpack(ctx, ""); err != nil {
			return nil, fmt.Errorf("import image %s: unpack %s: %w", path, i.Name, err)
		}
		names = append(names, i.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("import image %s: no named image in the archive: %w", path, errdefs.ErrInvalidArgument)
	}
	return names, nil
}

// ImportDir imports every *.tar in dir (k3s's agent/images folder, for
// air-gapped nodes), returning the image names per file; a bad file is
// reported in errs and the others still load.
func (r *Runtime) ImportDir(ctx context.Context, dir string) (map[string][]string, map[string]error) {
	imported := map[string][]string{}
	errs := map[string]error{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			errs[dir] = err
		}
		return imported, errs
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".tar") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		names, err := r.ImportImage(ctx, p)
		if err != nil {
			errs[p] = err
			continue
		}
		imported[p] = names
	}
	return imported, errs
}

// labelImageLease marks the lease of a pull or an import with the Runtime
// that holds it (Runtime.imageLeaseOwner).
const labelImageLease = "io.daemonlet.image-lease"

// imageLease puts a pull or an import under a lease of its own, labelled
// with this Runtime, instead of the client's anonymous one: the lease
// keeps the content and the snapshots being unpacked from containerd's
// garbage collector until the image refers to them, and without the label
// an agent killed in the middle would leave them for the lease's day.
// The lease has containerd's default expiry, as a pull may be long.
func (r *Runtime) imageLease(ctx context.Context) (context.Context, func(), error) {
	ctx, done, err := r.client.WithLease(ctx, leases.WithRandomID(),
		leases.WithExpiration(24*time.Hour),
		leases.WithLabels(map[string]string{labelImageLease: r.imageLeaseOwner}))
	if err != nil {
		return nil, nil, fmt.Errorf("lease: %w", err)
	}
	return ctx, func() {
		// The image holds what it needs now; deleting the lease lets
		// the collector take what an unfinished unpack left.
		if err := done(context.WithoutCancel(ctx)); err != nil {
			r.log.Debug("cannot delete the image lease", "err", err)
		}
	}, nil
}

// ReleaseStaleImageLeases deletes the pull and import leases of earlier
// Runtimes in the namespace (an agent killed while pulling or importing)
// and has containerd collect what they held at once: half-unpacked
// snapshots and partial content. Call it once at start, before pulling,
// from the only agent of the namespace.
func (r *Runtime) ReleaseStaleImageLeases(ctx context.Context) error {
	ctx = r.ctx(ctx)
	lm := r.client.LeasesService()
	ls, err := lm.List(ctx, fmt.Sprintf("labels.%q", labelImageLease))
	if err != nil {
		return fmt.Errorf("image leases: %w", err)
	}
	for _, l := range ls {
		if l.Labels[labelImageLease] == r.imageLeaseOwner {
			continue
		}
		if err := lm.Delete(ctx, l, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("image lease %s: %w", l.ID, err)
		}
		r.log.Info("released the image lease of an earlier agent", "lease", l.ID)
	}
	return nil
}
