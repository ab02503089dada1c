package agent

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
)

// parseSettingsFlags binds the settings flags on a fresh flag set and
// parses args.
func parseSettingsFlags(t *testing.T, args ...string) *SettingsFlags {
	t.Helper()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	f := BindSettingsFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSettingsDefaults(t *testing.T) {
	s, err := parseSettingsFlags(t, "--hostname-override", "Node-1").Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.HostnameOverride != "node-1" {
		t.Errorf("node name = %q, want it lowercased", s.HostnameOverride)
	}
	if s.RootDir != "/var/lib/daemonlet" || s.ImagesDir != "/var/lib/daemonlet/images" ||
		s.ContainerRuntimeEndpoint != "unix:///run/containerd/containerd.sock" || s.ContainerdNamespace != "daemonlet" ||
		s.HealthzAddress() != "127.0.0.1:10248" || s.PodCIDR != "10.88.0.0/16" ||
		!slices.Equal(s.CNIBinDirs(), []string{"/usr/lib/cni", "/opt/cni/bin"}) ||
		s.FileCheckFrequency.Duration != 20*time.Second || s.HTTPCheckFrequency.Duration != 20*time.Second {
		t.Errorf("defaults = %+v", s)
	}
	if s.HostIP == "" {
		t.Error("no default host IP")
	}
	if len(s.Sources(nil)) != 0 {
		t.Error("sources configured without a manifest path or URL")
	}
}

func TestSettingsFileAndFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	writeManifest(t, cfg, `hostnameOverride: from-file
nodeLabels:
  zone: a
  disk: ssd
registerWithTaints:
- key: dedicated
  value: infra
  effect: NoSchedule
podManifestPath: /etc/daemonlet/manifests
manifestURL: http://127.0.0.1:8080/ds
manifestURLHeader:
  Authorization: [Bearer x]
rootDir: /srv/daemonlet
healthzPort: 0
fileCheckFrequency: 5s
`)
	f := parseSettingsFlags(t, "--config", cfg,
		"--root-dir", "/data/daemonlet",
		"--node-labels", "zone=b",
		"--http-check-frequency", "7s",
		"--manifest-url-header", "X-A:1,X-B:2", "--manifest-url-header", "X-A:3")
	s, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	// Flags the user set win.
	if s.RootDir != "/data/daemonlet" || s.ImagesDir != "/data/daemonlet/images" {
		t.Errorf("rootDir = %q, imagesDir = %q, want the flag's", s.RootDir, s.ImagesDir)
	}
	if len(s.NodeLabels) != 1 || s.NodeLabels["zone"] != "b" {
		t.Errorf("labels = %v, want the flag's map, replacing the file's", s.NodeLabels)
	}
	if s.HTTPCheckFrequency.Duration != 7*time.Second {
		t.Errorf("httpCheckFrequency = %v", s.HTTPCheckFrequency)
	}
	if got := s.ManifestURLHeader["X-A"]; !slices.Equal(got, []string{"1", "3"}) || s.ManifestURLHeader["X-B"][0] != "2" {
		t.Errorf("headers = %v", s.ManifestURLHeader)
	}
	// The file wins over defaults, unset flags included.
	if s.HostnameOverride != "from-file" || s.PodManifestPath != "/etc/daemonlet/manifests" ||
		s.FileCheckFrequency.Duration != 5*time.Second || s.HealthzPort != 0 || s.HealthzAddress() != "" {
		t.Errorf("file settings lost: %+v", s)
	}
	if len(s.RegisterWithTaints) != 1 || s.RegisterWithTaints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("taints = %+v", s.RegisterWithTaints)
	}
	// Defaults fill the rest.
	if s.ContainerdNamespace != "daemonlet" || s.HealthzBindAddress != "127.0.0.1" {
		t.Errorf("defaults lost: %+v", s)
	}
	srcs := s.Sources(sourceTestLogger(t))
	if len(srcs) != 2 || srcs[0].Name() != SourceFile || srcs[1].Name() != SourceHTTP {
		t.Fatalf("sources = %v", srcs)
	}
	if h := srcs[1].(*HTTPSource).header; h.Get("Authorization") != "" || !slices.Equal(h.Values("X-A"), []string{"1", "3"}) {
		t.Errorf("HTTP source header = %v, want the flag's", h)
	}
	node := s.Node()
	if node.Name != "from-file" || node.Labels["zone"] != "b" || len(node.Spec.Taints) != 1 {
		t.Errorf("node = %+v", node)
	}
}

func TestSettingsConfigUnknownKeyAndBadValues(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	writeManifest(t, cfg, "rootDir: /x\npodManifestPth: /etc/m\n")
	_, err := parseSettingsFlags(t, "--config", cfg).Load()
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), cfg) || !strings.Contains(err.Error(), "podManifestPth") {
		t.Errorf("err = %v, want one naming the file and the unknown key", err)
	}

	writeManifest(t, cfg, "registerWithTaints: [{key: a, effect: Sometimes}]\npodCIDR: 10.88.0.0\nrootDir: relative\n")
	_, err = parseSettingsFlags(t, "--config", cfg, "--hostname-override", "n").Load()
	for _, want := range []string{"registerWithTaints[0].effect", "podCIDR (--pod-cidr)", "rootDir (--root-dir)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to name %s", err, want)
		}
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("err = %v, want an invalid argument", err)
	}

	_, err = parseSettingsFlags(t, "--node-labels", "no-equals-sign").Load()
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "--node-labels") {
		t.Errorf("err = %v, want a --node-labels error", err)
	}
	_, err = parseSettingsFlags(t, "--manifest-url-header", "NoColon").Load()
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("err = %v, want a --manifest-url-header error", err)
	}
}

func TestSettingsReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	writeManifest(t, cfg, "hostnameOverride: n1\nnodeLabels: {zone: a}\n")
	f := parseSettingsFlags(t, "--config", cfg, "--root-dir", "/srv/d")
	cur, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*corev1.Node
	r := NewReloader(f, cur, func(n *corev1.Node) { nodes = append(nodes, n) }, sourceTestLogger(t))

	// Nothing changed: nothing applied, nothing pending.
	if pending, err := r.Reload(); err != nil || len(pending) != 0 || len(nodes) != 0 {
		t.Fatalf("no-op reload: pending=%v err=%v nodes=%d", pending, err, len(nodes))
	}

	// Labels and taints apply at once; other settings wait for a restart;
	// the --root-dir flag still wins over the file.
	writeManifest(t, cfg, "hostnameOverride: n1\nnodeLabels: {zone: b}\nregisterWithTaints: [{key: k, effect: NoExecute}]\nrootDir: /other\ncontainerdNamespace: other\n")
	pending, err := r.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != "n1" || nodes[0].Labels["zone"] != "b" || len(nodes[0].Spec.Taints) != 1 {
		t.Fatalf("nodes = %+v, want one with the new labels and taints", nodes)
	}
	if !slices.Equal(pending, []string{"containerdNamespace"}) {
		t.Errorf("pending = %v, want only containerdNamespace", pending)
	}

	// A bad file is refused and changes nothing.
	writeManifest(t, cfg, "nodeLabels: {zone: c}\nbogus: 1\n")
	if _, err := r.Reload(); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad file: err = %v", err)
	}
	if len(nodes) != 1 {
		t.Errorf("a bad file changed the node: %+v", nodes[len(nodes)-1])
	}

	// Back to the applied labels: no new node; the restart is still pending.
	writeManifest(t, cfg, "hostnameOverride: n1\nnodeLabels: {zone: b}\nregisterWithTaints: [{key: k, effect: NoExecute}]\ncontainerdNamespace: other\n")
	pending, err = r.Reload()
	if err != nil || len(nodes) != 1 || !slices.Equal(pending, []string{"containerdNamespace"}) {
		t.Errorf("reload: pending=%v err=%v nodes=%d", pending, err, len(nodes))
	}
}

func TestSettingsDefaultRouteInterface(t *testing.T) {
	routes := `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth1	0000A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wlan0	00000000	0101A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	0100000A	0003	0	0	100	00000000	0	0	0
down0	00000000	0100000A	0002	0	0	1	00000000	0	0	0
`
	if got := defaultRouteInterface(strings.NewReader(routes)); got != "eth0" {
		t.Errorf("default route interface = %q, want eth0 (lowest metric, up)", got)
	}
	if got := defaultRouteInterface(strings.NewReader("Iface\tDestination\n")); got != "" {
		t.Errorf("no default route gave %q", got)
	}
}
