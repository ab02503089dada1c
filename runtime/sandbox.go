package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	corev1 "k8s.io/api/core/v1"
)

// A sandbox is a directory, root/<pod UID>:
//
//	sandbox.json     the record (sandboxRecord), written last and atomically:
//	                 a directory without it is a half-made sandbox
//	cni-intent.json  the CNI attachment about to be made (cniIntent)
//	ns/net, ns/ipc, ns/uts
//	                 bind mounts of the pod's namespaces (absent for the
//	                 host's: hostNetwork has no net and uts, hostIPC no ipc)
//	hosts, resolv.conf, hostname
//	volumes/<name>   emptyDir volumes (a tmpfs mount for medium Memory), and
//	                 configMap, secret and projected volumes that the agent
//	                 fills (a tmpfs mount when they hold Secrets)
//
// ensure makes the directory from nothing each time it finds no live record;
// before that it tears down whatever a previous attempt left, so a crash at
// any point is repaired by the next ensure or by remove.
const (
	sandboxRecordFile = "sandbox.json"
	sandboxIntentFile = "cni-intent.json"
	sandboxNSDir      = "ns"
)

// sandboxRecord is the content of sandbox.json.
type sandboxRecord struct {
	Sandbox Sandbox          `json:"sandbox"`
	Ports   []cniPortMapping `json:"ports,omitempty"`
	// Tmpfs lists the memory-backed emptyDirs and the volumes holding
	// Secrets: after a reboot their directories remain but the tmpfs is gone.
	Tmpfs []string `json:"tmpfs,omitempty"`
}

// sandboxes manages pod sandboxes under root (Config.RootDir/pods).
//
// Calls for different pods run in parallel; calls for one pod are
// serialised by that pod's lock.
type sandboxes struct {
	root   string
	hostIP string
	net    *cniNetwork
	log    *slog.Logger

	// nodeResolvConf is the node's resolv.conf, the source of pods' DNS
	// settings (kubelet's --resolv-conf); "" means none, as for kubelet.
	nodeResolvConf string
	// nodeHosts is the node's hosts file, copied for hostNetwork pods.
	nodeHosts string

	mu    sync.Mutex // guards locks
	locks map[string]*podLock
}

// podLock serialises the operations on one pod's sandbox.
type podLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; guarded by sandboxes.mu
}

// newSandboxes prepares root and the pod network. It writes a default CNI
// conflist into cni.ConfDir when it holds none; host-local keeps that
// network's allocations next to root, in the runtime's own state.
func newSandboxes(root string, hostIP string, cni CNIConfig, log *slog.Logger) (*sandboxes, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("create pod state directory: %w", err)
	}
	// Mount points in /proc/self/mountinfo are absolute and resolved; so
	// must root be for unmountAllUnder to find the pod's mounts.
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve pod state directory %s: %w", root, err)
	}
	net, err := newCNINetwork(cni, filepath.Join(filepath.Dir(abs), "cni", "host-local"))
	if err != nil {
		return nil, err
	}
	return &sandboxes{
		root:           abs,
		hostIP:         hostIP,
		net:            net,
		log:            log,
		nodeResolvConf: "/etc/resolv.conf",
		nodeHosts:      "/etc/hosts",
		locks:          map[string]*podLock{},
	}, nil
}

// lock takes the pod's lock and returns its release.
func (s *sandboxes) lock(podUID string) (unlock func()) {
	s.mu.Lock()
	l := s.locks[podUID]
	if l == nil {
		l = &podLock{}
		s.locks[podUID] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, podUID)
		}
		s.mu.Unlock()
	}
}

// podDir is the pod's state directory, refusing UIDs that are not a plain
// file name, since the UID becomes a path.
func (s *sandboxes) podDir(podUID string) (string, error) {
	if podUID == "" || podUID == "." || podUID == ".." || strings.ContainsAny(podUID, "/\x00") {
		return "", fmt.Errorf("pod UID %q is not usable as a directory name: %w", podUID, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(s.root, podUID), nil
}

// ensure creates the pod's sandbox or returns the existing one (idempotent;
// safe after a crash half-way: finishes or redoes half-done work).
//
// A recorded sandbox whose namespaces no longer exist (the node rebooted) is
// torn down and made anew, with a new IP, as kubelet makes a new sandbox.
func (s *sandboxes) ensure(ctx context.Context, pod *Pod) (*Sandbox, error) {
	dir, err := s.podDir(pod.UID)
	if err != nil {
		return nil, err
	}
	if pod.Spec == nil {
		return nil, fmt.Errorf("pod %s/%s has no spec: %w", pod.Namespace, pod.Name, errdefs.ErrInvalidArgument)
	}
	defer s.lock(pod.UID)()
	log := s.log.With("pod", pod.UID)

	rec, err := readSandboxRecord(dir)
	switch {
	case err == nil && rec.alive():
		return &rec.Sandbox, nil
	case err == nil:
		log.Info("sandbox namespaces are gone, recreating the sandbox")
	case errdefs.IsNotFound(err):
		if _, statErr := os.Stat(dir); statErr == nil {
			log.Info("redoing a half-made sandbox")
		}
	default:
		log.Warn("unreadable sandbox record, recreating the sandbox", "error", err)
	}
	if err := s.teardown(ctx, pod.UID, dir); err != nil {
		return nil, err
	}
	sb, err := s.create(ctx, pod, dir)
	if err != nil {
		if terr := s.teardown(context.WithoutCancel(ctx), pod.UID, dir); terr != nil {
			log.Error("cleaning up a failed sandbox", "error", terr)
		}
		return nil, fmt.Errorf("pod %s/%s: sandbox: %w", pod.Namespace, pod.Name, err)
	}
	log.Info("sandbox created", "ip", sb.IP)
	return sb, nil
}

// create makes the sandbox in the (absent) directory dir.
func (s *sandboxes) create(ctx context.Context, pod *Pod, dir string) (*Sandbox, error) {
	spec := pod.Spec
	for _, d := range []string{dir, filepath.Join(dir, sandboxNSDir), filepath.Join(dir, sandboxVolumes)} {
		if err := os.Mkdir(d, 0o750); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	sb := &Sandbox{PodUID: pod.UID, Dir: dir, HostIP: s.hostIP}
	ns := func(kind nsKind) string { return filepath.Join(dir, sandboxNSDir, kind.name) }

	var hostname string
	var err error
	if spec.HostNetwork {
		hostname, err = os.Hostname()
	} else {
		hostname, err = podHostnameOf(pod)
	}
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	if !spec.HostNetwork {
		sb.NetNSPath, sb.UTSNSPath = ns(nsNet), ns(nsUTS)
		if err := makeNamespace(nsNet, sb.NetNSPath, ""); err != nil {
			return nil, err
		}
		if err := makeNamespace(nsUTS, sb.UTSNSPath, hostname); err != nil {
			return nil, err
		}
	}
	if !spec.HostIPC {
		sb.IPCNSPath = ns(nsIPC)
		if err := makeNamespace(nsIPC, sb.IPCNSPath, ""); err != nil {
			return nil, err
		}
	}
	tmpfs, err := makeEmptyDirs(sb, spec.Volumes)
	if err != nil {
		return nil, err
	}

	rec := sandboxRecord{Tmpfs: tmpfs}
	if spec.HostNetwork {
		sb.IP = s.hostIP
	} else {
		rec.Ports = podPortMappings(spec)
		in, err := s.net.intent(pod, rec.Ports)
		if err != nil {
			return nil, err
		}
		if err := writeJSONAtomic(filepath.Join(dir, sandboxIntentFile), in); err != nil {
			return nil, err
		}
		if sb.IP, err = s.net.add(ctx, pod.UID, sb.NetNSPath, in); err != nil {
			return nil, err
		}
	}
	if err := s.writeFiles(sb, spec, hostname); err != nil {
		return nil, err
	}
	rec.Sandbox = *sb
	if err := writeJSONAtomic(filepath.Join(dir, sandboxRecordFile), rec); err != nil {
		return nil, err
	}
	return sb, nil
}

// makeEmptyDirs creates the pod's emptyDir volumes world-writable, as
// kubelet does, so that containers running as any user can use them; a
// medium Memory volume is a tmpfs, limited to its sizeLimit when it has one.
// It also prepares the directories of the volumes the agent fills from
// ConfigMaps and Secrets (makeObjectVolume). It returns the paths of the
// tmpfs volumes.
func makeEmptyDirs(sb *Sandbox, volumes []corev1.Volume) ([]string, error) {
	var tmpfs []string
	for _, v := range volumes {
		if projectsObjects(&v.VolumeSource) {
			path, err := makeObjectVolume(sb, &v)
			if err != nil {
				return nil, err
			}
			if path != "" {
				tmpfs = append(tmpfs, path)
			}
			continue
		}
		ed := v.EmptyDir
		if ed == nil {
			continue
		}
		path := sb.EmptyDirPath(v.Name)
		if filepath.Dir(path) != filepath.Join(sb.Dir, sandboxVolumes) {
			return nil, fmt.Errorf("emptyDir volume name %q: %w", v.Name, errdefs.ErrInvalidArgument)
		}
		if err := os.Mkdir(path, 0o777); err != nil {
			return nil, fmt.Errorf("emptyDir %s: %w", v.Name, err)
		}
		if ed.Medium == corev1.StorageMediumMemory {
			size := ""
			if ed.SizeLimit != nil && ed.SizeLimit.Sign() > 0 {
				size = strconv.FormatInt(ed.SizeLimit.Value(), 10)
			}
			if err := mountTmpfs(path, size); err != nil {
				return nil, fmt.Errorf("emptyDir %s: %w", v.Name, err)
			}
			tmpfs = append(tmpfs, path)
			continue // tmpfs's root is already world-writable (1777)
		}
		// Mkdir's mode is cut by the umask.
		if err := os.Chmod(path, 0o777); err != nil {
			return nil, fmt.Errorf("emptyDir %s: %w", v.Name, err)
		}
	}
	return tmpfs, nil
}

// projectsObjects says whether a volume is filled by the agent from
// ConfigMaps and Secrets (configMap, secret and projected volumes).
func projectsObjects(src *corev1.VolumeSource) bool {
	return src.ConfigMap != nil || src.Secret != nil || src.Projected != nil
}

// holdsSecrets says whether a volume gets Secret data, which must live on
// tmpfs and never reach the node's disk, as kubelet's secret volumes do.
func holdsSecrets(src *corev1.VolumeSource) bool {
	if src.Secret != nil {
		return true
	}
	if src.Projected != nil {
		for _, p := range src.Projected.Sources {
			if p.Secret != nil {
				return true
			}
		}
	}
	return false
}

// makeObjectVolume creates the directory of a configMap, secret or
// projected volume, which the agent fills (Sandbox.VolumePath); a volume
// holding Secrets is a tmpfs, whose path it returns.
func makeObjectVolume(sb *Sandbox, v *corev1.Volume) (string, error) {
	path := sb.VolumePath(v.Name)
	if filepath.Dir(path) != filepath.Join(sb.Dir, sandboxVolumes) {
		return "", fmt.Errorf("volume name %q: %w", v.Name, errdefs.ErrInvalidArgument)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		return "", fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if !holdsSecrets(&v.VolumeSource) {
		return "", nil
	}
	if err := mountTmpfs(path, ""); err != nil {
		return "", fmt.Errorf("volume %s: %w", v.Name, err)
	}
	// tmpfs's root is 1777; the agent alone writes here, containers read.
	if err := os.Chmod(path, 0o755); err != nil {
		return "", fmt.Errorf("volume %s: %w", v.Name, err)
	}
	return path, nil
}

// writeFiles writes the pod's hostname, hosts and resolv.conf.
func (s *sandboxes) writeFiles(sb *Sandbox, spec *corev1.PodSpec, hostname string) error {
	var hosts []byte
	if spec.HostNetwork {
		node, err := os.ReadFile(s.nodeHosts)
		if err != nil {
			return fmt.Errorf("read the node's hosts file: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
		hosts = hostNetworkHosts(node, spec.HostAliases)
	} else {
		hosts = managedHosts(sb.IP, hostname, spec.HostAliases)
	}
	var node dnsSettings
	if s.nodeResolvConf != "" {
		data, err := os.ReadFile(s.nodeResolvConf)
		if err != nil {
			return fmt.Errorf("read the node's resolv.conf: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
		node = parseResolvConf(data)
	}
	files := map[string][]byte{
		sb.HostnamePath():   []byte(hostname + "\n"),
		sb.HostsPath():      hosts,
		sb.ResolvConfPath(): podDNS(spec, node, s.nodeResolvConf != "").resolvConf(),
	}
	for path, data := range files {
		if err := writeFileAtomic(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// get returns the recorded sandbox of a pod (errdefs.ErrNotFound when none).
func (s *sandboxes) get(podUID string) (*Sandbox, error) {
	dir, err := s.podDir(podUID)
	if err != nil {
		return nil, err
	}
	rec, err := readSandboxRecord(dir)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", podUID, err)
	}
	return &rec.Sandbox, nil
}

// remove tears a sandbox down: CNI DEL (using libcni's cached result, so it
// works after an agent crash and after the netns is gone), unmount namespace
// files and tmpfs emptyDirs, delete the directory. Idempotent: removing a
// missing or half-made sandbox succeeds.
func (s *sandboxes) remove(ctx context.Context, podUID string) error {
	dir, err := s.podDir(podUID)
	if err != nil {
		return err
	}
	defer s.lock(podUID)()
	if err := s.teardown(ctx, podUID, dir); err != nil {
		return err
	}
	s.log.Info("sandbox removed", "pod", podUID)
	return nil
}

// teardown undoes whatever exists of the sandbox in dir. CNI DEL runs
// first, inside the network namespace while it is still pinned, because
// plugins only remove the pod's interface and its masquerade rules when
// they can enter it.
func (s *sandboxes) teardown(ctx context.Context, podUID, dir string) error {
	var intent *cniIntent
	if data, err := os.ReadFile(filepath.Join(dir, sandboxIntentFile)); err == nil {
		intent = &cniIntent{}
		if err := json.Unmarshal(data, intent); err != nil {
			s.log.Warn("unreadable CNI intent", "pod", podUID, "error", err)
			intent = nil
		}
	}
	netns := filepath.Join(dir, sandboxNSDir, nsNet.name)
	if !isNamespaceFile(netns) {
		netns = ""
	}
	if err := s.net.del(ctx, podUID, netns, intent); err != nil {
		return err
	}
	if err := unmountAllUnder(dir); err != nil {
		return fmt.Errorf("pod %s: %w", podUID, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("pod %s: delete sandbox directory: %w", podUID, err)
	}
	return nil
}

// list returns the pod UIDs that have a sandbox directory (for garbage
// collection of leftovers).
func (s *sandboxes) list() ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var uids []string
	for _, e := range entries {
		if e.IsDir() {
			uids = append(uids, e.Name())
		}
	}
	return uids, nil
}

// alive tells whether every namespace and tmpfs the record names still
// exists; they all vanish when the node reboots.
func (r *sandboxRecord) alive() bool {
	for _, p := range []string{r.Sandbox.NetNSPath, r.Sandbox.IPCNSPath, r.Sandbox.UTSNSPath} {
		if p != "" && !isNamespaceFile(p) {
			return false
		}
	}
	for _, p := range r.Tmpfs {
		if mounted, err := mountinfo.Mounted(p); err != nil || !mounted {
			return false
		}
	}
	return true
}

// readSandboxRecord reads the record of the sandbox in dir
// (errdefs.ErrNotFound when there is none).
func readSandboxRecord(dir string) (*sandboxRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, sandboxRecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no sandbox: %w", errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read sandbox record: %w", err)
	}
	var rec sandboxRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode sandbox record %s: %w", dir, err)
	}
	return &rec, nil
}

// writeJSONAtomic writes v as JSON to path, atomically.
func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return writeFileAtomic(path, data, 0o600)
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old file or the new one: a synced temporary file renamed over it, then the
// directory synced.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
