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
	run(t, "prometheus", promtool, "check", "config", "prometheus.yml")
	run(t, "prometheus", promtool, "check", "rules", "daemonlet.rules.yml")
	tests, err := filepath.Glob("prometheus/tests/*.test.yml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("rule tests %v, %v", tests, err)
	}
	for _, f := range tests {
		run(t, "prometheus/tests", promtool, "test", "rules", filepath.Base(f))
	}
}
