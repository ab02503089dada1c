package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

// maxPods is kubelet's default maxPods, reported as the pods capacity.
const maxPods = 110

// NodeSyncConfig configures a NodeSync.
type NodeSyncConfig struct {
	// Client talks to the server.
	Client *client.Client
	// Node is the node as the settings describe it; its labels and taints
	// are used only to register a Node the server does not have yet.
	Node *corev1.Node
	// HostIP is the node's InternalIP address.
	HostIP string
	// SetNode receives the server's labels and taints (Agent.SetNode).
	SetNode func(*corev1.Node)
	// SetRevisions, when set, receives the revisions the server's rollout
	// controller pins on this node (api.AnnotationNodeRevisions) whenever
	// they change, before Synced is closed (ServerSource.SetNodeRevisions).
	SetRevisions func(api.NodeRevisions)
	// Frequency is the heartbeat period; zero means
	// DefaultNodeStatusUpdateFrequency.
	Frequency time.Duration
	// KubeletVersion is status.nodeInfo.kubeletVersion ("daemonlet/<v>").
	KubeletVersion string
	// ContainerRuntimeVersion is status.nodeInfo.containerRuntimeVersion
	// ("containerd://<v>").
	ContainerRuntimeVersion string
	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
}

// NodeSync keeps this node's Node object on the server: it registers it,
// posts a heartbeat every Frequency, and watches it so that label and taint
// changes made on the server reach the agent at once. Once registered, the
// server's labels and taints are the node's truth, as for kubelet, whose
// --node-labels and --register-with-taints apply only at registration.
type NodeSync struct {
	cfg    NodeSyncConfig
	log    *slog.Logger
	synced chan struct{}
	once   sync.Once

	mu         sync.Mutex // guards the fields below
	uid        types.UID
	applied    *corev1.Node // the labels and taints last given to SetNode
	revs       api.NodeRevisions
	revsSet    bool   // revs were given to SetRevisions
	revsErr    string // the last unreadable annotation's error, logged once
	readySince metav1.Time
}

// NewNodeSync checks the configuration and returns a node sync; Run starts
// it.
func NewNodeSync(cfg NodeSyncConfig) (*NodeSync, error) {
	if cfg.Client == nil || cfg.Node == nil || cfg.Node.Name == "" || cfg.SetNode == nil {
		return nil, fmt.Errorf("node sync: a client, a named node and SetNode are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Frequency <= 0 {
		cfg.Frequency = DefaultNodeStatusUpdateFrequency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &NodeSync{cfg: cfg, log: cfg.Logger.With("node", cfg.Node.Name), synced: make(chan struct{})}, nil
}

// Synced is closed once the server's labels and taints are in force.
func (n *NodeSync) Synced() <-chan struct{} { return n.synced }

// UID is the Node object's UID on the server, empty until registered; the
// mirror pods of file and HTTP pods name the Node as their owner.
func (n *NodeSync) UID() types.UID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.uid
}

// Run registers the node, then heartbeats and watches it until ctx ends.
func (n *NodeSync) Run(ctx context.Context) {
	n.mu.Lock()
	n.readySince = metav1.Now()
	n.mu.Unlock()
	bo := newBackoff(reconnectInitial, reconnectMax)
	for {
		err := n.register(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("node registration failed; retrying", "err", err, "retryIn", bo.peek())
		if !bo.wait(ctx) {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.watch(ctx) })
	n.heartbeat(ctx)
	wg.Wait()
}

// register creates the Node with the settings' labels and taints, or, if
// it exists, takes the server's and posts this node's status.
func (n *NodeSync) register(ctx context.Context) error {
	nodes := n.cfg.Client.Nodes()
	obj := api.NewNode(n.cfg.Node.Name, n.cfg.Node.Labels, n.cfg.Node.Spec.Taints)
	obj.Status = n.status()
	created, err := nodes.Create(ctx, obj, client.WriteOptions{})
	switch {
	case err == nil:
		n.log.Info("node registered", "labels", created.Labels, "taints", len(created.Spec.Taints))
		n.apply(created)
		// The server may drop status on create; posting it is cheap.
		return n.postStatus(ctx)
	case apierrors.IsAlreadyExists(err):
		existing, err := nodes.Get(ctx, n.cfg.Node.Name)
		if err != nil {
			return fmt.Errorf("get existing node: %w", err)
		}
		n.log.Info("node already registered; the server's labels and taints apply", "labels", existing.Labels, "taints", len(existing.Spec.Taints))
		n.apply(existing)
		return n.postStatus(ctx)
	default:
		return fmt.Errorf("register node: %w", err)
	}
}

// apply hands the server's labels and taints to the agent when they
// changed, with the well-known labels always present.
func (n *NodeSync) apply(server *corev1.Node) {
	node := api.NewNode(n.cfg.Node.Name, server.Labels, server.Spec.Taints)
	n.mu.Lock()
	n.uid = server.UID
	changed := n.applied == nil || !maps.Equal(n.applied.Labels, node.Labels) || !sameTaints(n.applied.Spec.Taints, node.Spec.Taints)
	if changed {
		n.applied = node
	}
	n.mu.Unlock()
	if changed {
		n.cfg.SetNode(node)
	}
	n.applyRevisions(server)
	n.once.Do(func() { close(n.synced) })
}

// applyRevisions hands the node's revision pins to SetRevisions when they
// changed. An unreadable annotation is logged once and leaves the last
// pins in force (none before the first good one).
func (n *NodeSync) applyRevisions(server *corev1.Node) {
	if n.cfg.SetRevisions == nil {
		return
	}
	revs, err := api.ParseNodeRevisions(server)
	n.mu.Lock()
	if err != nil {
		first := err.Error() != n.revsErr
		n.revsErr = err.Error()
		n.mu.Unlock()
		if first {
			n.log.Error("cannot read the node's revision pins; keeping the last ones", "err", err)
		}
		return
	}
	n.revsErr = ""
	changed := !n.revsSet || !maps.EqualFunc(n.revs, revs, slices.Equal)
	n.revs, n.revsSet = revs, true
	n.mu.Unlock()
	if changed {
		n.cfg.SetRevisions(revs)
	}
}

// heartbeat posts the status every Frequency; a Node deleted on the server
// is registered again.
func (n *NodeSync) heartbeat(ctx context.Context) {
	t := time.NewTicker(n.cfg.Frequency)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := n.postStatus(ctx)
		if apierrors.IsNotFound(err) {
			n.log.Warn("node deleted on the server; registering it again")
			err = n.register(ctx)
		}
		switch {
		case err == nil && lastErr != "":
			n.log.Info("node heartbeat works again")
			lastErr = ""
		case err != nil && ctx.Err() == nil && err.Error() != lastErr:
			n.log.Warn("node heartbeat failed", "err", err)
			lastErr = err.Error()
		}
	}
}

// postStatus writes the node's status unconditionally (no
// resourceVersion): the agent owns its node's status.
func (n *NodeSync) postStatus(ctx context.Context) error {
	obj := &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Node.Name},
		Status:     n.status(),
	}
	_, err := n.cfg.Client.Nodes().UpdateStatus(ctx, obj)
	return err
}

// watch follows the Node object and applies its labels and taints.
func (n *NodeSync) watch(ctx context.Context) {
	nodes := n.cfg.Client.Nodes()
	sel := "metadata.name=" + n.cfg.Node.Name
	runListWatch(ctx, n.log, listWatch[corev1.Node]{
		resource: "nodes",
		list: func(ctx context.Context) ([]corev1.Node, string, error) {
			l, err := nodes.List(ctx, client.ListOptions{FieldSelector: sel})
			if err != nil {
				return nil, "", err
			}
			return l.Items, l.ResourceVersion, nil
		},
		watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[corev1.Node], error) {
			opts.FieldSelector = sel
			return nodes.Watch(ctx, opts)
		},
		replace: func(items []corev1.Node) {
			for i := range items {
				if items[i].Name == n.cfg.Node.Name {
					n.apply(&items[i])
				}
			}
		},
		event: func(t watch.EventType, node *corev1.Node) {
			// A deleted Node keeps the last labels; the heartbeat
			// registers it again.
			if t != watch.Deleted && node.Name == n.cfg.Node.Name {
				n.apply(node)
			}
		},
		failed:  func(string, error) {},
		working: func(string) {},
	})
}

// status is the node's status now: addresses, capacity, node info and the
// Ready condition with this heartbeat's time.
func (n *NodeSync) status() corev1.NodeStatus {
	n.mu.Lock()
	since := n.readySince
	n.mu.Unlock()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	if kib, err := memTotalKiB("/proc/meminfo"); err == nil {
		capacity[corev1.ResourceMemory] = *resource.NewQuantity(kib*1024, resource.BinarySI)
	} else {
		n.log.Warn("memory capacity unknown", "err", err)
	}
	addrs := []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: n.cfg.Node.Name}}
	if n.cfg.HostIP != "" {
		addrs = append([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.cfg.HostIP}}, addrs...)
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Addresses:   addrs,
		Conditions: []corev1.NodeCondition{{
			Type:               corev1.NodeReady,
			Status:             corev1.ConditionTrue,
			LastHeartbeatTime:  metav1.Now(),
			LastTransitionTime: since,
			Reason:             "KubeletReady",
			Message:            "daemonlet agent is posting ready status",
		}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               readTrimmed("/etc/machine-id"),
			BootID:                  readTrimmed("/proc/sys/kernel/random/boot_id"),
			KernelVersion:           readTrimmed("/proc/sys/kernel/osrelease"),
			OSImage:                 osImage("/etc/os-release"),
			ContainerRuntimeVersion: n.cfg.ContainerRuntimeVersion,
			KubeletVersion:          n.cfg.KubeletVersion,
			OperatingSystem:         goruntime.GOOS,
			Architecture:            goruntime.GOARCH,
		},
	}
}

// memTotalKiB reads MemTotal (in KiB) from a meminfo file.
func memTotalKiB(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal %q: %w", path, f[1], errdefs.ErrInvalidArgument)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal: %w", path, errdefs.ErrNotFound)
}

// readTrimmed is a small file's content, empty when it cannot be read
// (optional node info).
func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// osImage is os-release's PRETTY_NAME, as kubelet reports it.
func osImage(path string) string {
	for line := range strings.Lines(readTrimmed(path)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return v
		}
	}
	return "Unknown"
}
