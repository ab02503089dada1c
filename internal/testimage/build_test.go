package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readTar returns the regular files of a tar by name, with their modes.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]int64) {
	t.Helper()
	files, modes := map[string][]byte{}, map[string]int64{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, modes
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[hdr.Name] = hdr.Mode
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = b
		}
	}
}

func blobOf(t *testing.T, files map[string][]byte, d ocispec.Descriptor) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+d.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	if digest.FromBytes(b) != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("blob %s does not match its descriptor", d.Digest)
	}
	return b
}

// TestLayout checks the OCI layout, the image config and the layer's files,
// the cache sidecar, reproducibility, and that a variant differs.
func TestLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "img.tar")
	const ref = "registry.daemonlet.test/layout:v7"
	if err := Build(ctx, out, ref); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, bytes.NewReader(raw))
	if string(files[ocispec.ImageLayoutFile]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %s", files[ocispec.ImageLayoutFile])
	}
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(index.Manifests))
	}
	mdesc := index.Manifests[0]
	if got := mdesc.Annotations[images.AnnotationImageName]; got != ref {
		t.Errorf("image name annotation %q, want %q", got, ref)
	}
	if got := mdesc.Annotations[ocispec.AnnotationRefName]; got != "v7" {
		t.Errorf("ref name annotation %q, want the tag v7", got)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(blobOf(t, files, mdesc), &manifest); err != nil {
		t.Fatal(err)
	}
	var config ocispec.Image
	if err := json.Unmarshal(blobOf(t, files, manifest.Config), &config); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(config.Config.Entrypoint, []string{"/testimage"}) || !slices.Equal(config.Config.Cmd, []string{"sleep"}) {
		t.Errorf("entrypoint %q cmd %q", config.Config.Entrypoint, config.Config.Cmd)
	}
	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
		t.Fatalf("%d layers, %d diff ids", len(manifest.Layers), len(config.RootFS.DiffIDs))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobOf(t, files, manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(layerTar) != config.RootFS.DiffIDs[0] {
		t.Error("diff id does not match the uncompressed layer")
	}
	lfiles, lmodes := readTar(t, bytes.NewReader(layerTar))
	if lmodes["testimage"] != 0o755 || len(lfiles["testimage"]) < 1000 {
		t.Errorf("testimage: mode %o, %d bytes", lmodes["testimage"], len(lfiles["testimage"]))
	}
	if lmodes["tmp/"] != 0o1777 {
		t.Errorf("tmp mode %o", lmodes["tmp/"])
	}
	for _, user := range []string{"root:x:0:0:", "app:x:1000:1000:", "nobody:x:65534:65534:"} {
		if !bytes.Contains(lfiles["etc/passwd"], []byte(user)) {
			t.Errorf("etc/passwd lacks %s", user)
		}
	}

	// Unchanged sources: the tar is reused, not rewritten.
	before, _ := os.Stat(out)
	if err := Build(ctx, out, ref); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(out)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("second Build rewrote the cached tar")
	}
	// A stale sidecar forces a rebuild, which is byte-for-byte the same.
	if err := os.WriteFile(out+".hash", []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Build(ctx, out, ref); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(out)
	if os.SameFile(before, statOf(t, out)) {
		t.Error("Build with a stale hash did not rebuild")
	}
	if !bytes.Equal(raw, again) {
		t.Error("rebuilding gave a different tar: the image is not reproducible")
	}

	// A variant has another Cmd and so another manifest digest.
	vout := filepath.Join(dir, "variant.tar")
	if err := BuildVariant(ctx, vout, ref, []string{"exit", "0"}); err != nil {
		t.Fatal(err)
	}
	vraw, err := os.ReadFile(vout)
	if err != nil {
		t.Fatal(err)
	}
	vfiles, _ := readTar(t, bytes.NewReader(vraw))
	var vindex ocispec.Index
	if err := json.Unmarshal(vfiles["index.json"], &vindex); err != nil {
		t.Fatal(err)
	}
	if vindex.Manifests[0].Digest == mdesc.Digest {
		t.Error("variant has the same manifest digest")
	}

	if err := Build(ctx, filepath.Join(dir, "bad.tar"), "Not A Reference"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Build with an invalid reference: %v, want InvalidArgument", err)
	}
}

func statOf(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
