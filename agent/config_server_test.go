package agent

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

func TestServerSettings(t *testing.T) {
	s, err := parseSettingsFlags(t, "--hostname-override", "n1").Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Servers) != 0 || s.NodeStatusUpdateFrequency.Duration != 10*time.Second {
		t.Errorf("defaults: servers %v, frequency %v", s.Servers, s.NodeStatusUpdateFrequency.Duration)
	}

	// The flag is repeatable and comma-separated.
	s, err = parseSettingsFlags(t, "--hostname-override", "n1", "--server", "https://a:6443,https://b:6443", "--server", "https://c:6443",
		"--token-file", "/etc/daemonlet/token", "--certificate-authority", "/etc/daemonlet/ca.pem", "--node-status-update-frequency", "3s").Load()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Servers, []string{"https://a:6443", "https://b:6443", "https://c:6443"}) ||
		s.TokenFile != "/etc/daemonlet/token" || s.CertificateAuthority != "/etc/daemonlet/ca.pem" || s.NodeStatusUpdateFrequency.Duration != 3*time.Second {
		t.Errorf("settings = %+v", s)
	}

	// The file takes one URL or a list.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	writeManifest(t, cfg, "hostnameOverride: n1\nserver: https://one:6443\ntokenFile: /t\ncertificateAuthority: /ca\nnodeStatusUpdateFrequency: 20s\n")
	if s, err = parseSettingsFlags(t, "--config", cfg).Load(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Servers, []string{"https://one:6443"}) || s.TokenFile != "/t" || s.CertificateAuthority != "/ca" || s.NodeStatusUpdateFrequency.Duration != 20*time.Second {
		t.Errorf("file settings = %+v", s)
	}
	writeManifest(t, cfg, "hostnameOverride: n1\nserver: [https://one:6443, https://two:6443]\n")
	if s, err = parseSettingsFlags(t, "--config", cfg).Load(); err != nil || len(s.Servers) != 2 {
		t.Errorf("file list: servers %v, err %v", s.Servers, err)
	}

	for _, args := range [][]string{
		{"--server", "ftp://x"},
		{"--node-status-update-frequency", "0s"},
		{"--token-file", "/t"},
	} {
		if _, err := parseSettingsFlags(t, append([]string{"--hostname-override", "n1"}, args...)...).Load(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%v: err = %v, want invalid", args, err)
		}
	}
}

func TestSettingsReloadWithServerKeepsServerLabels(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	writeManifest(t, cfg, "hostnameOverride: n1\nserver: https://s:6443\nnodeLabels: {zone: a}\n")
	f := parseSettingsFlags(t, "--config", cfg)
	cur, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*corev1.Node
	r := NewReloader(f, cur, func(n *corev1.Node) { nodes = append(nodes, n) }, sourceTestLogger(t))
	writeManifest(t, cfg, "hostnameOverride: n1\nserver: https://s:6443\nnodeLabels: {zone: b}\n")
	pending, err := r.Reload()
	if err != nil || len(pending) != 0 {
		t.Fatalf("reload: pending %v, err %v", pending, err)
	}
	if len(nodes) != 0 {
		t.Errorf("with a server, a reload changed the node's labels: %+v", nodes)
	}
}
