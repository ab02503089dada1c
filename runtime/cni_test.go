package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestCNIDefaultConflist(t *testing.T) {
	dir := t.TempDir()
	cfg := CNIConfig{
		ConfDir:    filepath.Join(dir, "net.d"),
		BinDirs:    defaultCNIBinDirs,
		CacheDir:   filepath.Join(dir, "cache"),
		PodCIDR:    "10.231.9.0/24",
		BridgeName: "dltconf",
	}
	n, err := newCNINetwork(cfg, filepath.Join(dir, "ipam"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := n.network()
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != defaultNetworkName || list.CNIVersion != cniVersion {
		t.Errorf("network %q version %q, want %q %q", list.Name, list.CNIVersion, defaultNetworkName, cniVersion)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if !slices.Equal(types, []string{"bridge", "portmap"}) {
		t.Fatalf("plugins %q, want bridge, portmap", types)
	}
	var bridge struct {
		Bridge    string `json:"bridge"`
		IsGateway bool   `json:"isGateway"`
		IPMasq    bool   `json:"ipMasq"`
		IPAM      struct {
			Type    string                `json:"type"`
			DataDir string                `json:"dataDir"`
			Ranges  [][]map[string]string `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &bridge); err != nil {
		t.Fatal(err)
	}
	if bridge.Bridge != "dltconf" || !bridge.IsGateway || !bridge.IPMasq || bridge.IPAM.Type != "host-local" ||
		bridge.IPAM.DataDir != filepath.Join(dir, "ipam") || bridge.IPAM.Ranges[0][0]["subnet"] != "10.231.9.0/24" {
		t.Errorf("bridge plugin config %s", list.Plugins[0].Bytes)
	}
	var portmap struct {
		SNAT         bool            `json:"snat"`
		Capabilities map[string]bool `json:"capabilities"`
	}
	if err := json.Unmarshal(list.Plugins[1].Bytes, &portmap); err != nil {
		t.Fatal(err)
	}
	if !portmap.SNAT || !portmap.Capabilities[cniPortMappingsKey] {
		t.Errorf("portmap plugin config %s", list.Plugins[1].Bytes)
	}

	// The installed plugins must speak the conflist's version.
	for _, typ := range types {
		info, err := n.cni.GetVersionInfo(context.Background(), typ)
		if err != nil {
			t.Logf("plugin %s not installed here: %v", typ, err)
			continue
		}
		if !slices.Contains(info.SupportedVersions(), cniVersion) {
			t.Errorf("plugin %s supports %q, not %s", typ, info.SupportedVersions(), cniVersion)
		}
	}
}

func TestCNIKeepsExistingConfiguration(t *testing.T) {
	dir := t.TempDir()
	conf := `{"cniVersion": "1.0.0", "name": "mine", "type": "bridge", "bridge": "mybr0"}`
	if err := os.WriteFile(filepath.Join(dir, "20-mine.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := newCNINetwork(CNIConfig{ConfDir: dir, CacheDir: filepath.Join(t.TempDir(), "cache")}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, defaultConflistName)); !os.IsNotExist(err) {
		t.Errorf("default conflist written next to an existing configuration (%v)", err)
	}
	list, err := n.network()
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "mine" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "bridge" {
		t.Errorf("network %q with %d plugins, want the single .conf upgraded to a list", list.Name, len(list.Plugins))
	}
	// A later file name sorts after: the first file wins, as in containerd.
	other := `{"cniVersion": "1.0.0", "name": "later", "plugins": [{"type": "loopback"}]}`
	if err := os.WriteFile(filepath.Join(dir, "90-later.conflist"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if list, err := n.network(); err != nil || list.Name != "mine" {
		t.Errorf("network = %v, %v; want mine", list, err)
	}
}

func TestCNIPortMappings(t *testing.T) {
	spec := &corev1.PodSpec{Containers: []corev1.Container{
		{Name: "a", Ports: []corev1.ContainerPort{
			{ContainerPort: 80, HostPort: 8080, Protocol: corev1.ProtocolTCP},
			{ContainerPort: 81}, // no hostPort: not mapped
		}},
		{Name: "b", Ports: []corev1.ContainerPort{
			{ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP, HostIP: "127.0.0.1"},
		}},
	}}
	got := podPortMappings(spec)
	want := []cniPortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("port mappings %+v, want %+v", got, want)
	}
	// The runtime config portmap receives.
	in := &cniIntent{Ports: got}
	rt := in.runtimeConf("uid-1", "/x")
	if rt.ContainerID != "uid-1" || rt.IfName != podInterface || rt.CapabilityArgs[cniPortMappingsKey] == nil {
		t.Errorf("runtime conf %+v", rt)
	}
}

func TestCNIArgs(t *testing.T) {
	pod := &Pod{UID: "uid-1", Name: "web-0", Namespace: "prod"}
	want := [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", "prod"},
		{"K8S_POD_NAME", "web-0"},
		{"K8S_POD_INFRA_CONTAINER_ID", "uid-1"},
	}
	if got := cniArgs(pod); !slices.Equal(got, want) {
		t.Errorf("CNI_ARGS %q, want %q", got, want)
	}
}
