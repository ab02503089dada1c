// Package runtime runs daemon pods on containerd: images (pull and air-gapped
// import), a pod sandbox (shared network, IPC and UTS namespaces wired by CNI,
// resolv.conf, hosts, hostname, emptyDirs), containers built from Kubernetes
// container specs, their logs in the CRI format, and the listing that lets an
// agent started from nothing adopt what runs.
//
// A pod has no pause container: the sandbox's namespaces are bind-mounted
// files under the pod's state directory, and every container of the pod joins
// them by path. The containerd containers carry labels (see Label*) that say
// which pod, container, revision and attempt they are.
//
// Errors are classified with github.com/containerd/errdefs (ErrNotFound,
// ErrInvalidArgument, ErrFailedPrecondition, ErrUnavailable, ...) and wrapped
// with %w; callers match them with errdefs.IsX, never by text.
package runtime

import (
	"log/slog"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Labels set on every containerd container daemonlet creates. Together they
// identify the pod, the container and the attempt, so that a restarted agent
// can adopt running containers instead of restarting them.
const (
	LabelPodName       = "io.daemonlet.pod.name"
	LabelPodNamespace  = "io.daemonlet.pod.namespace"
	LabelPodUID        = "io.daemonlet.pod.uid"
	LabelPodRevision   = "io.daemonlet.pod.revision"
	LabelContainerName = "io.daemonlet.container.name"
	LabelAttempt       = "io.daemonlet.container.attempt"
	LabelInit          = "io.daemonlet.container.init"
	LabelSpecHash      = "io.daemonlet.container.hash"
	// LabelOOMKilled is set on a container whose task was killed by the
	// kernel's OOM killer, so the reason survives the task's deletion.
	LabelOOMKilled = "io.daemonlet.container.oom-killed"
)

// Pod is one daemon pod as the runtime needs it: identity plus the defaulted
// pod template spec.
type Pod struct {
	UID         string
	Name        string
	Namespace   string
	NodeName    string
	Revision    string
	Labels      map[string]string
	Annotations map[string]string
	Spec        *corev1.PodSpec
}

// Sandbox is the per-pod environment shared by its containers. Namespace
// paths are empty when the pod uses the host's (hostNetwork, hostIPC).
type Sandbox struct {
	PodUID string
	// Dir is the pod's state directory: namespace files, resolv.conf, hosts,
	// hostname and emptyDir volumes live below it.
	Dir       string
	NetNSPath string
	IPCNSPath string
	UTSNSPath string
	// IP is the pod IP: the CNI-assigned address, or the host IP with
	// hostNetwork.
	IP string
	// HostIP is the node's address, for status.hostIP.
	HostIP string
}

// Files and directories of a sandbox's state directory.
const (
	sandboxHosts      = "hosts"
	sandboxResolvConf = "resolv.conf"
	sandboxHostname   = "hostname"
	sandboxVolumes    = "volumes"
)

// HostsPath is the pod's /etc/hosts, mounted into each container.
func (s *Sandbox) HostsPath() string { return filepath.Join(s.Dir, sandboxHosts) }

// ResolvConfPath is the pod's /etc/resolv.conf, mounted into each container.
func (s *Sandbox) ResolvConfPath() string { return filepath.Join(s.Dir, sandboxResolvConf) }

// HostnamePath is the pod's /etc/hostname, mounted into each container.
func (s *Sandbox) HostnamePath() string { return filepath.Join(s.Dir, sandboxHostname) }

// EmptyDirPath is where the emptyDir volume of that name lives on the host.
func (s *Sandbox) EmptyDirPath(volume string) string {
	return filepath.Join(s.Dir, sandboxVolumes, volume)
}

// VolumePath is where the agent writes the files of the configMap, secret or
// projected volume of that name; it is the same place as EmptyDirPath, since
// a volume name is unique in a pod.
func (s *Sandbox) VolumePath(volume string) string { return s.EmptyDirPath(volume) }

// Config holds what the runtime needs to reach containerd and lay out pods.
type Config struct {
	// Address is containerd's socket path (a unix:// prefix is accepted).
	Address string
	// Namespace is daemonlet's own containerd namespace.
	Namespace string
	// RootDir holds pod state (RootDir/pods/<uid>) and seccomp profiles
	// (RootDir/seccomp, as kubelet's <root-dir>/seccomp).
	RootDir string
	// PodLogDir is kubelet's /var/log/pods.
	PodLogDir string
	// ContainerLogDir is kubelet's /var/log/containers (symlinks).
	ContainerLogDir string
	// LogDriver is the absolute path of the binary containerd's shim runs to
	// write a container's output in the CRI log format; it is called as
	// `LogDriver log-driver <file>`, so it outlives an agent restart.
	LogDriver string
	// HostIP is the node's address (status.hostIP, and the pod IP with
	// hostNetwork).
	HostIP string
	// CNI configures pod networking.
	CNI CNIConfig
	// Logger receives the runtime's operational logs.
	Logger *slog.Logger
}

// CNIConfig configures the pod network.
type CNIConfig struct {
	// ConfDir holds CNI network configurations; a default bridge conflist is
	// written there when it has none (default /etc/cni/net.d).
	ConfDir string
	// BinDirs are searched for plugins (default /usr/lib/cni, /opt/cni/bin).
	BinDirs []string
	// CacheDir is libcni's result cache, needed for DEL after a crash.
	CacheDir string
	// PodCIDR is the range of the default network (default 10.88.0.0/16).
	PodCIDR string
	// BridgeName is the default network's bridge (default daemonlet0).
	BridgeName string
}

// ContainerState is the coarse state of a container.
type ContainerState int

// Container states, as CRI reports them.
const (
	StateUnknown ContainerState = iota
	StateCreated
	StateRunning
	StateExited
)

func (s ContainerState) String() string {
	switch s {
	case StateCreated:
		return "Created"
	case StateRunning:
		return "Running"
	case StateExited:
		return "Exited"
	}
	return "Unknown"
}

// Container is a containerd container of daemonlet with its status.
type Container struct {
	ID         string
	PodUID     string
	PodName    string
	Namespace  string
	Name       string // container name in the pod spec
	Revision   string
	Attempt    int
	Init       bool
	SpecHash   string
	Labels     map[string]string
	State      ContainerState
	PID        uint32
	ExitCode   int32
	Reason     string // Completed, Error, OOMKilled
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}
