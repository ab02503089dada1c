// Package testimage builds daemonlet's test image: the static program in
// ./prog packed, with a minimal /etc, as a single-layer OCI image layout tar
// that containerd imports directly (client.Import) and that can be pushed to
// a registry; BuildDockerArchive writes the same image as `docker save`
// does. See prog's package documentation for the argument grammar.
//
// The tar is reproducible: file times are fixed and gzip carries no name or
// time, so the same sources, reference and command give the same digests.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Ref is the default reference the test image is imported under.
const Ref = "registry.daemonlet.test/testimage:v1"

// BinaryPath is where the program lives inside the image.
const BinaryPath = "/testimage"

// DefaultCmd is the image's Cmd unless a variant asks for another.
var DefaultCmd = []string{"sleep"}

// formatVersion changes whenever the image layout written here changes, so
// that cached tars from an older layout are rebuilt.
const formatVersion = "1"

// epoch is the fixed modification time of every file, for reproducibility.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Build writes the test image, tagged ref, with Cmd DefaultCmd, to outTar.
func Build(ctx context.Context, outTar, ref string) error {
	return BuildVariant(ctx, outTar, ref, DefaultCmd)
}

// BuildVariant writes the test image with cmd as the image's Cmd, so that
// tests get a second image (other digest, other default behaviour) cheaply.
// An existing outTar is reused when its sidecar outTar+".hash" matches the
// program sources, ref and cmd.
func BuildVariant(ctx context.Context, outTar, ref string, cmd []string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("test image reference %q: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	src, err := progDir(ctx)
	if err != nil {
		return err
	}
	key, err := cacheKey(src, ref, cmd)
	if err != nil {
		return err
	}
	sidecar := outTar + ".hash"
	if old, err := os.ReadFile(sidecar); err == nil && string(old) == key {
		if _, err := os.Stat(outTar); err == nil {
			return nil
		}
	}
	bin, err := compile(ctx, src)
	if err != nil {
		return err
	}
	if err := writeImage(outTar, named, ref, bin, cmd); err != nil {
		return err
	}
	if err := os.WriteFile(sidecar, []byte(key), 0o644); err != nil {
		return fmt.Errorf("write test image hash: %w", err)
	}
	return nil
}

// BuildProgram writes an image like the test image's, tagged ref, whose
// program (at BinaryPath, the entrypoint) is the static executable program
// instead of the test program, with Cmd cmd: how the bootstrap example
// packs the daemonlet binary (built with CGO_ENABLED=0) so that an agent
// can run `daemonlet server` as a static pod without a registry.
func BuildProgram(outTar, ref string, program []byte, cmd []string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	return writeImage(outTar, named, ref, program, cmd)
}

// BuildDockerArchive writes the test image, tagged ref, with Cmd DefaultCmd,
// to outTar in the format `docker save` writes (manifest.json naming a
// config file and an uncompressed layer.tar per layer), for tests of the
// air-gapped import of docker archives. It is not cached: the Go build
// cache already makes a rebuild cheap.
func BuildDockerArchive(ctx context.Context, outTar, ref string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("test image reference %q: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	// docker save lists a familiar name:tag, and ":latest" when untagged.
	tagged, ok := reference.TagNameOnly(named).(reference.NamedTagged)
	if !ok {
		return fmt.Errorf("test image reference %q: a docker archive needs a tag, not a digest: %w", ref, errdefs.ErrInvalidArgument)
	}
	src, err := progDir(ctx)
	if err != nil {
		return err
	}
	bin, err := compile(ctx, src)
	if err != nil {
		return err
	}
	raw, _, err := layer(bin)
	if err != nil {
		return fmt.Errorf("test image layer: %w", err)
	}
	config, err := imageConfig(raw, DefaultCmd)
	if err != nil {
		return err
	}
	configName := config.desc.Digest.Encoded() + ".json"
	layerDir := digest.FromBytes(raw).Encoded()
	manifest, err := json.Marshal([]dockerManifest{{
		Config:   configName,
		RepoTags: []string{reference.FamiliarString(tagged)},
		Layers:   []string{layerDir + "/layer.tar"},
	}})
	if err != nil {
		return fmt.Errorf("test image manifest: %w", err)
	}
	return writeTarAtomic(outTar, []string{layerDir + "/"}, []entry{
		{configName, config.data},
		{layerDir + "/layer.tar", raw},
		{"manifest.json", manifest},
	})
}

// dockerManifest is one entry of a docker archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// progDir finds the program's sources: next to this file when the sources
// are on disk (tests), else in the module that `go env GOMOD` names.
func progDir(ctx context.Context) (string, error) {
	if _, file, _, ok := goruntime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "prog")
		if _, err := os.Stat(filepath.Join(dir, "main.go")); err == nil {
			return dir, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locate module with go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("test image sources: not inside the daemonlet module: %w", errdefs.ErrNotFound)
	}
	dir := filepath.Join(filepath.Dir(mod), "internal", "testimage", "prog")
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		return "", fmt.Errorf("test image sources: %w: %w", errdefs.ErrNotFound, err)
	}
	return dir, nil
}

// cacheKey hashes everything the tar depends on.
func cacheKey(src, ref string, cmd []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "format %s\nref %s\narch %s\ngo %s\n", formatVersion, ref, goruntime.GOARCH, goruntime.Version())
	cmdJSON, err := json.Marshal(cmd)
	if err != nil {
		return "", fmt.Errorf("test image cmd: %w", err)
	}
	fmt.Fprintf(h, "cmd %s\n", cmdJSON)
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", fmt.Errorf("read test image sources: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", fmt.Errorf("read test image sources: %w", err)
		}
		fmt.Fprintf(h, "file %s %d\n", e.Name(), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compile builds the static program and returns its bytes.
func compile(ctx context.Context, src string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "testimage-build-")
	if err != nil {
		return nil, fmt.Errorf("compile test image: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "testimage")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("compile test image: %w: %s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("compile test image: %w", err)
	}
	return b, nil
}

// file is one entry of the image's only layer.
type file struct {
	name string
	mode int64
	dir  bool
	data []byte
}

func layerFiles(bin []byte) []file {
	return []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/bin/sh\n" +
				"app:x:1000:1000:app:/home/app:/bin/sh\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "etc/group", mode: 0o644, data: []byte(
			"root:x:0:\n" +
				"app:x:1000:\n" +
				"nogroup:x:65534:\n")},
		// Empty files for the runtime to bind-mount over.
		{name: "etc/hosts", mode: 0o644},
		{name: "etc/resolv.conf", mode: 0o644},
		{name: "etc/hostname", mode: 0o644},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o755, data: bin},
	}
}

// layer returns the uncompressed and gzip-compressed layer tar.
func layer(bin []byte) (raw, gz []byte, err error) {
	var rawBuf bytes.Buffer
	tw := tar.NewWriter(&rawBuf)
	for _, f := range layerFiles(bin) {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Format: tar.FormatPAX, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if f.dir {
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	var gzBuf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gzBuf, gzip.BestSpeed)
	if err != nil {
		return nil, nil, err
	}
	if _, err := zw.Write(rawBuf.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return rawBuf.Bytes(), gzBuf.Bytes(), nil
}

// entry is one file of the layout tar.
type entry struct {
	name string
	data []byte
}

// blob is one content-addressed file of the layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, data: data}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return newBlob(mediaType, b), nil
}

// writeImage writes the OCI image layout tar to outTar, atomically.
func writeImage(outTar string, named reference.Named, ref string, bin []byte, cmd []string) error {
	raw, gz, err := layer(bin)
	if err != nil {
		return fmt.Errorf("test image layer: %w", err)
	}
	layerBlob := newBlob(ocispec.MediaTypeImageLayerGzip, gz)
	platform := imagePlatform()
	config, err := imageConfig(raw, cmd)
	if err != nil {
		return err
	}
	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layerBlob.desc},
	})
	if err != nil {
		return fmt.Errorf("test image manifest: %w", err)
	}
	// OCI's ref.name is the tag alone (as containerd's own exporter writes
	// it); containerd's image.name carries the full reference it imports as.
	refName := ref
	if tagged, ok := named.(reference.Tagged); ok {
		refName = tagged.Tag()
	}
	mdesc := manifest.desc
	mdesc.Platform = &platform
	mdesc.Annotations = map[string]string{
		ocispec.AnnotationRefName:  refName,
		images.AnnotationImageName: ref,
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return fmt.Errorf("test image index: %w", err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("test image layout: %w", err)
	}

	entries := []entry{{ocispec.ImageLayoutFile, layout}, {"index.json", index}}
	for _, b := range []blob{layerBlob, config, manifest} {
		entries = append(entries, entry{"blobs/" + b.desc.Digest.Algorithm().String() + "/" + b.desc.Digest.Encoded(), b.data})
	}
	return writeTarAtomic(outTar, []string{"blobs/", "blobs/sha256/"}, entries)
}

// imagePlatform is the platform the program is compiled for.
func imagePlatform() ocispec.Platform {
	return ocispec.Platform{OS: "linux", Architecture: goruntime.GOARCH}
}

// imageConfig is the image's config blob for the uncompressed layer raw.
func imageConfig(raw []byte, cmd []string) (blob, error) {
	created := epoch
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: imagePlatform(),
		Config: ocispec.ImageConfig{
			Entrypoint: []string{BinaryPath},
			Cmd:        slices.Clone(cmd),
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(raw)}},
	})
	if err != nil {
		return blob{}, fmt.Errorf("test image config: %w", err)
	}
	return config, nil
}

// writeTarAtomic writes the directories dirs, then the files entries, as a
// tar at outTar, renamed into place so that no reader sees half a tar.
func writeTarAtomic(outTar string, dirs []string, entries []entry) error {
	if err := os.MkdirAll(filepath.Dir(outTar), 0o755); err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(outTar), ".testimage-*.tar")
	if err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tw := tar.NewWriter(tmp)
	for _, dir := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
			return fmt.Errorf("write test image: %w", err)
		}
	}
	for _, e := range entries {
		if err := writeTarFile(tw, e.name, e.data); err != nil {
			return fmt.Errorf("write test image: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	// CreateTemp makes the file 0600; the image is no secret.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	if err := os.Rename(tmp.Name(), outTar); err != nil {
		return fmt.Errorf("write test image: %w", err)
	}
	return nil
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, ModTime: epoch, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := io.Copy(tw, bytes.NewReader(data))
	return err
}
