// Package ctdtest runs a private containerd for integration tests and the
// demo: its own root, state, sockets and plugin directories under one
// directory, so that it never touches (or is touched by) the host's
// containerd, and so that everything it leaves can be found and removed.
//
// A test package shares one instance: its TestMain calls Main, and each test
// that needs containerd calls Require, which starts the instance on first
// use. Tests that need root or containerd skip with the reason on a
// developer machine and fail instead when DAEMONLET_REQUIRE_INTEGRATION=1
// (set by .ci/run), so that CI cannot pass by skipping.
package ctdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// DefaultNamespace is the containerd namespace Client uses by default.
const DefaultNamespace = "daemonlet-test"

// stopTimeout is how long containerd gets to exit on SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// readyTimeout bounds how long a starting containerd may take to answer.
const readyTimeout = 30 * time.Second

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Containerd is one private containerd daemon.
type Containerd struct {
	// Dir holds everything of this instance: config, log, root, state, sockets.
	Dir string
	// Address is the gRPC socket path, for client.New.
	Address string
	// Root is containerd's persistent root directory.
	Root string
	// State is containerd's state directory (task bundles, shim state).
	State string
	// Namespace is the default namespace of the clients Client returns.
	Namespace string

	binary string
	config string
	log    string

	// mu guards the fields below; Restart and Stop take it for their whole run.
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
	lastLog string
}

// Binary returns the containerd executable to run, or an error classed
// errdefs.ErrNotFound when none is installed.
func Binary() (string, error) {
	if _, err := os.Stat("/usr/bin/containerd"); err == nil {
		return "/usr/bin/containerd", nil
	}
	p, err := exec.LookPath("containerd")
	if err != nil {
		return "", fmt.Errorf("containerd binary (install the Debian package containerd, or run make deps): %w: %w", errdefs.ErrNotFound, err)
	}
	return p, nil
}

// Start writes a configuration for a containerd living entirely under dir
// (created if needed), starts it and waits until it answers.
func Start(dir string) (*Containerd, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("containerd dir: %w", err)
	}
	c := &Containerd{
		Dir:       dir,
		Address:   filepath.Join(dir, "containerd.sock"),
		Root:      filepath.Join(dir, "root"),
		State:     filepath.Join(dir, "state"),
		Namespace: DefaultNamespace,
		binary:    bin,
		config:    filepath.Join(dir, "config.toml"),
		log:       filepath.Join(dir, "containerd.log"),
	}
	if len(c.Address)+len(".ttrpc") > maxSocketPath {
		return nil, fmt.Errorf("containerd dir %s: socket path would exceed %d bytes: %w", dir, maxSocketPath, errdefs.ErrInvalidArgument)
	}
	for _, d := range []string{c.Root, c.State, filepath.Join(dir, "plugins"), filepath.Join(dir, "opt")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("containerd dir: %w", err)
		}
	}
	if err := os.WriteFile(c.config, []byte(c.configTOML()), 0o644); err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// configTOML is a version 2 config (understood by containerd 1.6 and 1.7)
// with the CRI plugin off: daemonlet drives containerd's own API, and CRI
// would only add start time and its own network setup.
func (c *Containerd) configTOML() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
plugin_dir = %[3]q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
`, c.Root, c.State, filepath.Join(c.Dir, "plugins"), c.Address, c.Address+".ttrpc", filepath.Join(c.Dir, "opt"))
}

// start runs the daemon process and waits until its API answers.
func (c *Containerd) start() error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("containerd log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(c.binary, "--config", c.config)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The shim and runc are looked up in PATH, and a test's PATH may lack sbin.
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.cmd, c.exited = cmd, exited

	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("containerd exited during start (%v); log:\n%s: %w", cmd.ProcessState, c.readLog(), errdefs.ErrUnavailable)
		default:
		}
		if lastErr = c.ping(); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.kill()
	return fmt.Errorf("containerd did not answer within %v (%v); log:\n%s: %w", readyTimeout, lastErr, c.readLog(), errdefs.ErrUnavailable)
}

// ping asks the daemon for its version.
func (c *Containerd) ping() error {
	if _, err := os.Stat(c.Address); err != nil {
		return err
	}
	cl, err := client.New(c.Address, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cl.Version(ctx)
	return err
}

// Client returns a new client of this containerd whose default namespace
// is c.Namespace; the caller closes it.
func (c *Containerd) Client() (*client.Client, error) {
	cl, err := client.New(c.Address, client.WithDefaultNamespace(c.Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd client %s: %w", c.Address, err)
	}
	return cl, nil
}

// Pid returns the daemon's process id, or 0 when it is not running.
func (c *Containerd) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil || c.hasExited() {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *Containerd) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// kill ends the daemon process: SIGTERM, then SIGKILL after stopTimeout.
// Shims are separate processes and survive it.
func (c *Containerd) kill() {
	if c.cmd == nil || c.hasExited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(stopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// Restart stops the daemon alone (SIGTERM by pid; shims and their tasks
// keep running) and starts it again on the same directories, as a
// containerd upgrade or crash-restart under a running agent would.
func (c *Containerd) Restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("restart containerd in %s: already stopped: %w", c.Dir, errdefs.ErrFailedPrecondition)
	}
	c.kill()
	return c.start()
}

// Reboot simulates a machine reboot under containerd: the daemon, its
// shims and every container process die at once, State (a tmpfs under
// /run on a real machine) is wiped with whatever was mounted in it, and
// containerd starts again on the same Root, which keeps its containers
// and images as a disk would. Mounts outside Dir that a reboot would also
// drop (pod namespaces, say) are the caller's to unmount.
func (c *Containerd) Reboot() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("reboot containerd in %s: already stopped: %w", c.Dir, errdefs.ErrFailedPrecondition)
	}
	if c.cmd != nil && !c.hasExited() {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	errs := []error{c.killLeftovers()}
	shimSockets := c.shimSockets()
	cgroups := c.bundleCgroups()
	errs = append(errs, UnmountUnder(c.State))
	for _, s := range shimSockets {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	removeCgroups(cgroups)
	if err := os.RemoveAll(c.State); err != nil {
		errs = append(errs, err)
	}
	if err := os.MkdirAll(c.State, 0o711); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reboot containerd in %s: %w", c.Dir, err)
	}
	return c.start()
}

// Log returns the daemon's log so far, to print when a test fails.
func (c *Containerd) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.lastLog
	}
	return c.readLog()
}

func (c *Containerd) readLog() string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return fmt.Sprintf("(no containerd log: %v)", err)
	}
	return string(b)
}

// Stop removes every task and container (with its snapshot) in every
// namespace, stops the daemon, kills what is left of this instance's shims
// and their children, unmounts whatever is still mounted under Dir and
// removes Dir. It keeps going after a failure and returns all of them.
// Log keeps answering after Stop.
func (c *Containerd) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	var nss []string
	if c.cmd != nil && !c.hasExited() {
		var err error
		nss, err = c.removeAll()
		errs = append(errs, err)
	}
	c.kill()
	c.lastLog = c.readLog()
	errs = append(errs, c.killLeftovers())
	shimSockets := c.shimSockets()
	cgroups := c.bundleCgroups()
	errs = append(errs, UnmountUnder(c.Dir))
	for _, s := range shimSockets {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
	}
	for _, ns := range nss {
		cgroups = append(cgroups, "/"+ns)
	}
	removeCgroups(cgroups)
	return errors.Join(errs...)
}

// bundleCgroups returns the cgroupsPath of every task bundle still in
// State: tasks that could not be deleted through the API (the daemon was
// dead) leave their cgroups behind once their processes are killed.
func (c *Containerd) bundleCgroups() []string {
	files, _ := filepath.Glob(filepath.Join(c.State, "io.containerd.runtime.v2.task", "*", "*", "config.json"))
	var paths []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var spec struct {
			Linux *struct {
				CgroupsPath string `json:"cgroupsPath"`
			} `json:"linux"`
		}
		// Only cgroupfs paths; systemd's "slice:prefix:name" form is left
		// to systemd, which removes a unit's cgroup when the unit ends.
		if json.Unmarshal(b, &spec) == nil && spec.Linux != nil && strings.HasPrefix(spec.Linux.CgroupsPath, "/") {
			paths = append(paths, spec.Linux.CgroupsPath)
		}
	}
	return paths
}

// removeCgroups removes the given cgroups and their parents (up to, not
// including, the hierarchy root) in every hierarchy: runc removes a
// container's own cgroup but never the parents the default cgroupsPath
// (/<namespace>/<id>) made. rmdir on cgroupfs fails unless the group is
// empty, so a group still in use (by another instance that shares the
// namespace name, say) is kept.
func removeCgroups(paths []string) {
	seen := map[string]bool{}
	var all []string
	for _, p := range paths {
		for p = filepath.Clean(p); p != "/" && p != "."; p = filepath.Dir(p) {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	// Children before parents.
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup")
	for _, p := range all {
		for _, h := range hierarchies {
			_ = unix.Rmdir(filepath.Join(h, p))
		}
	}
}

// removeAll deletes every task and container the daemon knows of and
// returns the namespaces it found.
func (c *Containerd) removeAll() ([]string, error) {
	cl, err := client.New(c.Address)
	if err != nil {
		return nil, fmt.Errorf("cleanup client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("cleanup: list namespaces: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		conts, err := cl.Containers(nctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("cleanup: list containers in %s: %w", ns, err))
			continue
		}
		for _, ct := range conts {
			if err := removeContainer(nctx, ct); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: container %s/%s: %w", ns, ct.ID(), err))
			}
		}
	}
	return nss, errors.Join(errs...)
}

func removeContainer(ctx context.Context, ct client.Container) error {
	task, err := ct.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return err
	default:
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task: %w", err)
		}
	}
	if err := ct.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

// ownProcesses returns the pids whose command line names this instance
// (its shims: they carry -address <Address>) and all their descendants
// (container processes, log drivers), found through /proc, never by name.
func (c *Containerd) ownProcesses() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	parent := map[int]int{}
	var roots []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ppid, ok := procParent(pid); ok {
			parent[pid] = ppid
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			a := string(arg)
			if a == c.Address || a == c.config || strings.HasPrefix(a, c.Dir+"/") {
				roots = append(roots, pid)
				break
			}
		}
	}
	own := map[int]bool{}
	for _, p := range roots {
		own[p] = true
	}
	// Walk down the tree until no new descendant appears.
	for grew := true; grew; {
		grew = false
		for pid, ppid := range parent {
			if own[ppid] && !own[pid] {
				own[pid], grew = true, true
			}
		}
	}
	pids := make([]int, 0, len(own))
	for p := range own {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	return pids
}

// procParent reads the parent pid from /proc/<pid>/stat.
func procParent(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name is in parentheses and may contain spaces; the fields
	// after its closing parenthesis are "state ppid ...".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// killLeftovers SIGKILLs this instance's remaining processes and waits
// (a bounded time) until they are gone.
func (c *Containerd) killLeftovers() error {
	pids := c.ownProcesses()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d of containerd %s survived SIGKILL: %w", pid, c.Dir, errdefs.ErrFailedPrecondition)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// processAlive reports whether pid exists and is not a zombie; zombies of
// killed shims are reaped by init, not by us.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// shimSockets lists the sockets this instance's shims announced in their
// bundles' address files; they live outside Dir (containerd 1.6 puts them
// in /run/containerd/s) and outlive a killed shim.
func (c *Containerd) shimSockets() []string {
	files, _ := filepath.Glob(filepath.Join(c.State, "io.containerd.runtime.v2.task", "*", "*", "address"))
	var socks []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		addr := strings.TrimSpace(string(b))
		if p, ok := strings.CutPrefix(addr, "unix://"); ok && filepath.IsAbs(p) {
			socks = append(socks, p)
		}
	}
	return socks
}

// UnmountUnder unmounts every mount at or below dir, deepest first, lazily
// when a mount is busy.
func UnmountUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	var errs []error
	for _, m := range mounts {
		err := unix.Unmount(m.Mountpoint, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.Mountpoint, err))
		}
	}
	return errors.Join(errs...)
}
