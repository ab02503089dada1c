// Command democtl starts and removes daemonlet's demo on one machine: a
// private containerd (internal/ctdtest, the one way the project starts
// one), `daemonlet server` with generated tokens, one agent joined to it,
// and the example DaemonSets of deploy/examples on the project's own image
// (internal/testimage, imported through --images-dir: no registry needed).
// Everything lives under one directory; `make demo` and `make demo-down`
// run it (as root).
//
//	democtl up   [flags]   start everything, apply the examples, wait until
//	                       they are ready, print where things are
//	democtl down [flags]   remove everything up made, and the directory
//
// up leaves a supervisor process (democtl run) holding the daemons; down
// signals it by the pid in <dir>/democtl.pid and it tears them down in
// order: DaemonSets deleted and their pods stopped by the agent, the agent
// and the server stopped, what pods remain removed through the runtime
// (CNI teardown included), containerd stopped with every container, shim
// and mount, the bridge deleted. When the supervisor is gone (killed, a
// reboot), down finds the recorded pids and the private containerd's
// leftovers itself.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/testimage"
	"github.com/daemonlet/daemonlet/runtime"
)

// demo is one demo installation: its directory and its ports.
type demo struct {
	dir, bin, examples            string
	serverPort, healthzPort       int
	metricsPort, exporterPort     int
	bridge, podCIDR, node, ctdDir string
}

// examples are the files of deploy/examples the demo applies: both run on
// the test image.
var examples = []string{"node-exporter.yaml", "log-shipper.yaml"}

// containerdNamespace keeps the demo's containers apart from anything else
// on the private containerd.
const containerdNamespace = "daemonlet-demo"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: democtl up|down|run [flags]")
		os.Exit(2)
	}
	d := &demo{}
	fs := flag.NewFlagSet("democtl "+os.Args[1], flag.ExitOnError)
	fs.StringVar(&d.dir, "dir", "/var/tmp/daemonlet-demo", "the `directory` holding all of the demo")
	fs.StringVar(&d.bin, "bin", "bin/daemonlet", "the daemonlet `binary` (make build)")
	fs.StringVar(&d.examples, "examples", "deploy/examples", "the `directory` of the example manifests")
	fs.IntVar(&d.serverPort, "server-port", 16443, "the server's port on 127.0.0.1")
	fs.IntVar(&d.healthzPort, "healthz-port", 10348, "the agent's healthz port on 127.0.0.1")
	fs.IntVar(&d.metricsPort, "metrics-port", 10355, "the agent's metrics port on 127.0.0.1")
	fs.IntVar(&d.exporterPort, "exporter-port", 9100, "the node-exporter example's host port")
	fs.StringVar(&d.bridge, "bridge", "dldemo0", "the pod network's bridge `name`")
	fs.StringVar(&d.podCIDR, "pod-cidr", "10.236.0.0/24", "the pod network's `range`")
	fs.StringVar(&d.node, "node", "demo-node", "the agent's node `name`")
	_ = fs.Parse(os.Args[2:])
	var err error
	if d.dir, err = filepath.Abs(d.dir); err == nil {
		d.bin, err = filepath.Abs(d.bin)
	}
	if err == nil {
		d.ctdDir = filepath.Join(d.dir, "containerd")
		switch os.Args[1] {
		case "up":
			err = d.up()
		case "down":
			err = d.down()
		case "run":
			err = d.run()
		default:
			err = fmt.Errorf("unknown command %q: up, down or run", os.Args[1])
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "democtl %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func (d *demo) path(elem ...string) string { return filepath.Join(append([]string{d.dir}, elem...)...) }

func (d *demo) serverURL() string { return fmt.Sprintf("http://127.0.0.1:%d", d.serverPort) }

// flags are the command line that gives run the same demo.
func (d *demo) flags() []string {
	return []string{"-dir", d.dir, "-bin", d.bin, "-examples", d.examples,
		"-server-port", strconv.Itoa(d.serverPort), "-healthz-port", strconv.Itoa(d.healthzPort),
		"-metrics-port", strconv.Itoa(d.metricsPort), "-exporter-port", strconv.Itoa(d.exporterPort),
		"-bridge", d.bridge, "-pod-cidr", d.podCIDR, "-node", d.node}
}

// up prepares the directory, starts the supervisor, applies the examples
// and waits until they are ready.
func (d *demo) up() error {
	if pid, ok := readPid(d.path("democtl.pid")); ok && alive(pid) {
		return fmt.Errorf("a demo already runs from %s (pid %d): make demo-down first", d.dir, pid)
	}
	if _, err := os.Stat(d.bin); err != nil {
		return fmt.Errorf("the daemonlet binary (make build): %w", err)
	}
	for _, sub := range []string{"images", "cni", "examples", "container-logs", "pod-logs", "manifests"} {
		if err := os.MkdirAll(d.path(sub), 0o755); err != nil {
			return err
		}
	}
	if err := testimage.Build(context.Background(), d.path("images", "testimage.tar"), testimage.Ref); err != nil {
		return err
	}
	if err := d.writeTokens(); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"daemonlet-demo","plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`, d.bridge, d.podCIDR, d.path("ipam"))
	if err := os.WriteFile(d.path("cni", "10-demo.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	if err := d.renderExamples(); err != nil {
		return err
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(d.path("democtl.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	sup := exec.Command(self, append([]string{"run"}, d.flags()...)...)
	sup.Stdout, sup.Stderr = logf, logf
	// Its own session: the supervisor outlives make and the terminal.
	sup.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sup.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(d.path("democtl.pid"), []byte(strconv.Itoa(sup.Process.Pid)), 0o644); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = sup.Wait(); close(exited) }()
	if err := waitFor(2*time.Minute, "the demo's daemons", func() error {
		select {
		case <-exited:
			log, _ := os.ReadFile(d.path("democtl.log"))
			return permanentError{fmt.Errorf("the supervisor exited:\n%s", log)}
		default:
		}
		_, err := os.Stat(d.path("ready"))
		return err
	}); err != nil {
		return err
	}

	for _, f := range examples {
		out, err := d.cli("apply", "-f", d.path("examples", f))
		if err != nil {
			return err
		}
		fmt.Print(out)
	}
	if err := waitFor(2*time.Minute, "both DaemonSets to be ready", func() error {
		out, err := d.cli("get", "ds", "-A")
		if err != nil {
			return err
		}
		ready := 0
		for _, line := range strings.Split(out, "\n") {
			// NAMESPACE NAME DESIRED CURRENT READY ...
			if f := strings.Fields(line); len(f) > 4 && f[2] == "1" && f[4] == "1" {
				ready++
			}
		}
		if ready < len(examples) {
			return fmt.Errorf("not ready yet:\n%s", out)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, args := range [][]string{{"get", "ds", "-A"}, {"get", "pods", "-A", "-o", "wide"}} {
		out, err := d.cli(args...)
		if err != nil {
			return err
		}
		fmt.Printf("\n$ daemonlet %s\n%s", strings.Join(args, " "), out)
	}
	fmt.Printf(`
The demo runs from %[1]s (logs: democtl.log, server.log, agent.log).
Use the CLI as the admin:
  export DAEMONLET_SERVER=%[2]s DAEMONLET_TOKEN=$(cat %[1]s/admin.token)
  %[3]s get ds -A
Metrics:
  agent:  curl http://127.0.0.1:%[4]d/metrics
  server: curl -H "Authorization: Bearer $(cat %[1]s/prometheus.token)" %[2]s/metrics
          (a token of group system:monitoring; the admin token works too)
  node-exporter example: curl http://127.0.0.1:%[5]d/
Remove everything: make demo-down (or %[6]s down -dir %[1]s)
`, d.dir, d.serverURL(), d.bin, d.metricsPort, d.exporterPort, self)
	return nil
}

// writeTokens generates the admin's, the agent's and Prometheus' tokens and
// the server's token file.
func (d *demo) writeTokens() error {
	users := []struct{ file, user, groups string }{
		{"admin.token", "admin", "system:masters"},
		{"node.token", "system:node:" + d.node, "system:nodes"},
		{"prometheus.token", "prometheus", "system:monitoring"},
	}
	var csv strings.Builder
	for _, u := range users {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		tok := hex.EncodeToString(b)
		if err := os.WriteFile(d.path(u.file), []byte(tok), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&csv, "%s,%s,%s,%q\n", tok, u.user, u.user, u.groups)
	}
	return os.WriteFile(d.path("tokens.csv"), []byte(csv.String()), 0o600)
}

// renderExamples copies the examples with the demo's exporter port and
// container log directory, so that several demos (the CI's) never share a
// host port or read the host's logs.
func (d *demo) renderExamples() error {
	for _, f := range examples {
		b, err := os.ReadFile(filepath.Join(d.examples, f))
		if err != nil {
			return err
		}
		s := strings.ReplaceAll(string(b), "9100", strconv.Itoa(d.exporterPort))
		s = strings.ReplaceAll(s, "path: /var/log/containers", "path: "+d.path("container-logs"))
		if err := os.WriteFile(d.path("examples", f), []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// cli runs the daemonlet CLI as the admin.
func (d *demo) cli(args ...string) (string, error) {
	tok, err := os.ReadFile(d.path("admin.token"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(d.bin, append([]string{"--server", d.serverURL(), "--token", string(tok)}, args...)...)
	cmd.Env = append(os.Environ(), "DAEMONLET_CONFIG="+d.path("no-cli-config"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("daemonlet %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// run is the supervisor: it starts containerd, the server and the agent,
// and tears everything down on SIGTERM.
func (d *demo) run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctd, err := ctdtest.Start(d.ctdDir)
	if err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		if err := d.teardown(ctd, procs); err != nil {
			fmt.Fprintf(os.Stderr, "teardown: %v\n", err)
		}
	}()
	server, err := d.start("server.log", "server", "--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(d.serverPort),
		"--data-dir", d.path("server"), "--token-auth-file", d.path("tokens.csv"))
	if err != nil {
		return err
	}
	procs = append(procs, server)
	if err := waitFor(30*time.Second, "the server", func() error {
		resp, err := http.Get(d.serverURL() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}); err != nil {
		return err
	}
	agentProc, err := d.start("agent.log", d.agentArgs(ctd)...)
	if err != nil {
		return err
	}
	procs = append(procs, agentProc)
	pids := fmt.Sprintf("%d %d %d\n", ctd.Pid(), server.Process.Pid, agentProc.Process.Pid)
	if err := os.WriteFile(d.path("pids"), []byte(pids), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(d.path("ready"), nil, 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func (d *demo) agentArgs(ctd *ctdtest.Containerd) []string {
	return []string{"agent",
		"--hostname-override", d.node,
		"--server", d.serverURL(), "--token-file", d.path("node.token"),
		"--root-dir", d.path("agent"),
		"--container-runtime-endpoint", "unix://" + ctd.Address,
		"--containerd-namespace", containerdNamespace,
		"--pod-manifest-path", d.path("manifests"),
		"--images-dir", d.path("images"),
		"--pod-logs-dir", d.path("pod-logs"),
		"--container-logs-dir", d.path("container-logs"),
		"--cni-conf-dir", d.path("cni"),
		"--pod-cidr", d.podCIDR,
		"--node-ip", "127.0.0.1",
		"--healthz-bind-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(d.healthzPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", d.metricsPort),
	}
}

// start runs the daemonlet binary with args, logging to the file logName.
func (d *demo) start(logName string, args ...string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(d.path(logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(d.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// teardown removes what run started, in dependency order, and keeps going
// after a failure.
func (d *demo) teardown(ctd *ctdtest.Containerd, procs []*exec.Cmd) error {
	var errs []error
	if len(procs) == 2 {
		// The agent stops the pods of deleted DaemonSets and tears their
		// networks down, as in production; what it leaves, removePods
		// removes below, so this is only reported.
		if err := d.deleteDaemonSets(); err != nil {
			fmt.Fprintf(os.Stderr, "note: %v; removing the pods through the runtime\n", err)
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		errs = append(errs, stopProc(procs[i]))
	}
	errs = append(errs, d.removePods(ctd.Address), ctd.Stop(), d.removeLeftovers())
	return errors.Join(errs...)
}

// deleteDaemonSets deletes every DaemonSet and waits up to 30s for the
// agent to have stopped their pods.
func (d *demo) deleteDaemonSets() error {
	tok, err := os.ReadFile(d.path("admin.token"))
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{Servers: []string{d.serverURL()}, Token: string(tok), Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	ctx := context.Background()
	list, err := c.DaemonSets("").List(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	for _, ds := range list.Items {
		if err := c.DaemonSets(ds.Namespace).Delete(ctx, ds.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return waitFor(30*time.Second, "the agent to stop the pods", func() error {
		pods, err := agent.FetchPods(ctx, fmt.Sprintf("127.0.0.1:%d", d.healthzPort))
		if err != nil {
			return err
		}
		if len(pods) > 0 {
			return fmt.Errorf("%d pods left", len(pods))
		}
		return nil
	})
}

// removePods removes, through the agent's runtime, the containers and
// sandboxes (with their CNI networks) that are left.
func (d *demo) removePods(address string) error {
	ctx := context.Background()
	rt, err := runtime.New(ctx, runtime.Config{
		Address: address, Namespace: containerdNamespace, RootDir: d.path("agent"),
		PodLogDir: d.path("pod-logs"), ContainerLogDir: d.path("container-logs"),
		LogDriver: d.bin, HostIP: "127.0.0.1",
		CNI: runtime.CNIConfig{ConfDir: d.path("cni"), CacheDir: filepath.Join(d.path("agent"), "cni", "cache"), PodCIDR: d.podCIDR},
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	var errs []error
	conts, err := rt.ListContainers(ctx)
	errs = append(errs, err)
	for _, c := range conts {
		errs = append(errs, rt.RemoveContainer(ctx, c.ID))
	}
	uids, err := rt.ListSandboxes(ctx)
	errs = append(errs, err)
	for _, uid := range uids {
		errs = append(errs, rt.RemoveSandbox(ctx, uid))
	}
	return errors.Join(errs...)
}

// removeLeftovers unmounts what is still mounted under the directory and
// deletes the bridge.
func (d *demo) removeLeftovers() error {
	err := ctdtest.UnmountUnder(d.dir)
	if _, statErr := os.Stat("/sys/class/net/" + d.bridge); statErr == nil {
		if out, delErr := exec.Command("ip", "link", "del", d.bridge).CombinedOutput(); delErr != nil {
			err = errors.Join(err, fmt.Errorf("ip link del %s: %w: %s", d.bridge, delErr, out))
		}
	}
	return err
}

// stopProc ends a daemon with SIGTERM, SIGKILL after 30s.
func stopProc(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM", cmd.Args[1])
	}
}

// down stops the supervisor, which removes everything, or, without one,
// removes the leftovers itself; then it deletes the directory.
func (d *demo) down() error {
	if _, err := os.Stat(d.dir); errors.Is(err, os.ErrNotExist) {
		fmt.Printf("no demo in %s\n", d.dir)
		return nil
	}
	var errs []error
	pid, ok := readPid(d.path("democtl.pid"))
	if ok && alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if err := waitFor(2*time.Minute, "the supervisor to tear the demo down", func() error {
			if alive(pid) {
				return errors.New("still running")
			}
			return nil
		}); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			errs = append(errs, err)
		}
		if log, err := os.ReadFile(d.path("democtl.log")); err == nil && strings.Contains(string(log), "teardown:") {
			errs = append(errs, fmt.Errorf("the supervisor's teardown failed:\n%s", log))
		}
	}
	if _, err := os.Stat(d.ctdDir); err == nil {
		// No supervisor did it: kill the recorded daemons by pid, then
		// restart the private containerd on its directories so that Stop
		// finds and removes every container, shim and mount.
		if b, err := os.ReadFile(d.path("pids")); err == nil {
			for f := range strings.FieldsSeq(string(b)) {
				if p, err := strconv.Atoi(f); err == nil && p > 0 && alive(p) {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		ctd, err := ctdtest.Start(d.ctdDir)
		if err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, d.removePods(ctd.Address), ctd.Stop())
		}
		errs = append(errs, d.removeLeftovers())
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("demo in %s removed\n", d.dir)
	return nil
}

func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// permanentError ends waitFor at once.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }

// waitFor polls try every 250ms until it succeeds, returns a permanent
// error, or timeout passes.
func waitFor(timeout time.Duration, what string, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s: %w", timeout, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
