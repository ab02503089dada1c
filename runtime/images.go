package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/client"
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
