// Package deploy_test checks the files of deploy/ with the tools that
// consume them: systemd-analyze for the units, promtool for the Prometheus
// configuration, alert rules and their unit tests.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// tool finds a binary, or skips (fails under DAEMONLET_REQUIRE_INTEGRATION=1).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		ctdtest.Unavailable(t, "%s (Debian package %s, or make deps): %v", name, pkg, err)
	}
	return p
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out)
}

// TestSystemdUnitsVerify runs systemd-analyze verify on the units. The
// binary path is swapped for this test binary, since verify insists that
// ExecStart's program exists.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("units %v, %v", units, err)
	}
	dir := t.TempDir()
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ExecStart=/usr/local/bin/daemonlet ") {
			t.Fatalf("%s: ExecStart does not run /usr/local/bin/daemonlet", u)
		}
		dst := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(dst, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/daemonlet", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, args...)...)
	out, err := cmd.CombinedOutput()
	// verify exits 0 on warnings too; any output is a finding.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestPrometheusRules checks the scrape configuration and the alert rules
// and runs the rules' unit tests.
func TestPrometheusRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	// check config wants the server job's token file to exist; the operator
	// writes it, so the check runs on a copy with a stand-in.
	dir := t.TempDir()
	for _, f := range []string{"prometheus.yml", "daemonlet.rules.yml"} {
		b, err := os.ReadFile(filepath.Join("prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "daemonlet-server.token"), []byte("stand-in\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, promtool, "check", "config", "prometheus.yml")
	run(t, "prometheus", promtool, "check", "rules", "daemonlet.rules.yml")
	tests, err := filepath.Glob("prometheus/tests/*.test.yml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("rule tests %v, %v", tests, err)
	}
	for _, f := range tests {
		run(t, "prometheus/tests", promtool, "test", "rules", filepath.Base(f))
	}
}

// TestInstallScript installs into a --root prefix, checks every file and
// mode, checks that a second install keeps the operator's files, then
// uninstalls and checks that nothing is left. systemctl is never run under
// --root: the script prints what it would run.
func TestInstallScript(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(t.TempDir(), "daemonlet")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho daemonlet\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	install := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("./install.sh", append([]string{"--root", root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := install("--binary", bin, "--server", "https://10.0.0.1:6443", "--token", "s3cret", "--server-too")
	if !strings.Contains(out, "would run: systemctl enable --now daemonlet-agent.service") ||
		!strings.Contains(out, "would run: systemctl enable --now daemonlet-server.service") {
		t.Errorf("install did not say what it would enable:\n%s", out)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/daemonlet":                     0o755,
		"etc/systemd/system/daemonlet-agent.service":  0o644,
		"etc/systemd/system/daemonlet-server.service": 0o644,
		"etc/daemonlet/agent.yaml":                    0o644,
		"etc/daemonlet/token":                         0o600,
		"etc/daemonlet/manifests":                     os.ModeDir | 0o755,
	} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("etc/daemonlet/token"); got != "s3cret\n" {
		t.Errorf("token %q", got)
	}
	conf := read("etc/daemonlet/agent.yaml")
	for _, want := range []string{`server: ["https://10.0.0.1:6443"]`, "tokenFile: /etc/daemonlet/token", "podManifestPath: /etc/daemonlet/manifests"} {
		if !strings.Contains(conf, want) {
			t.Errorf("agent.yaml lacks %q:\n%s", want, conf)
		}
	}
	unit, err := os.ReadFile("systemd/daemonlet-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if read("etc/systemd/system/daemonlet-agent.service") != string(unit) {
		t.Error("the installed agent unit differs from deploy/systemd's")
	}

	// A second install keeps the operator's settings and token.
	if err := os.WriteFile(filepath.Join(root, "etc/daemonlet/agent.yaml"), []byte("nodeLabels: {a: b}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	install("--binary", bin, "--token", "other")
	if read("etc/daemonlet/agent.yaml") != "nodeLabels: {a: b}\n" || read("etc/daemonlet/token") != "s3cret\n" {
		t.Error("a second install overwrote the settings or the token")
	}

	// Uninstalling without --purge-pods leaves the pods' state alone.
	state := filepath.Join(root, "var/lib/daemonlet/agent.db")
	if err := os.MkdirAll(filepath.Dir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out = install("--uninstall")
	if !strings.Contains(out, "would run: systemctl disable --now daemonlet-agent.service") || !strings.Contains(out, "--purge-pods") {
		t.Errorf("uninstall output:\n%s", out)
	}
	for _, path := range []string{"usr/local/bin/daemonlet", "etc/systemd/system/daemonlet-agent.service", "etc/systemd/system/daemonlet-server.service", "etc/daemonlet/token", "etc/daemonlet/agent.yaml"} {
		if _, err := os.Stat(filepath.Join(root, path)); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall (%v)", path, err)
		}
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("uninstall without --purge-pods removed the pods' state: %v", err)
	}
	install("--uninstall", "--purge-pods")
	if _, err := os.Stat(filepath.Dir(state)); !os.IsNotExist(err) {
		t.Errorf("--purge-pods left the agent's state (%v)", err)
	}

	// Without a binary there is nothing to install.
	if out, err := exec.Command("./install.sh", "--root", root, "--binary", filepath.Join(root, "absent")).CombinedOutput(); err == nil {
		t.Errorf("install without a binary succeeded:\n%s", out)
	}
}
