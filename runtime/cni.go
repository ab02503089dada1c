package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
)

// Defaults of CNIConfig's fields, and the default network's names.
const (
	defaultCNIConfDir   = "/etc/cni/net.d"
	defaultPodCIDR      = "10.88.0.0/16"
	defaultBridgeName   = "daemonlet0"
	defaultNetworkName  = "daemonlet"
	defaultConflistName = "10-daemonlet.conflist"
)

// podInterface is the pod's interface name, as kubelet asks CNI for it.
const podInterface = "eth0"

// cniPortMappingsKey is the capability through which portmap takes the
// hostPort mappings.
const cniPortMappingsKey = "portMappings"

// defaultCNIBinDirs are Debian's plugin directory and the upstream one.
var defaultCNIBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// cniVersion of the default conflist: the newest version both libcni and
// Debian's plugins (1.1.1: up to 1.0.0) speak, and one whose DEL carries the
// cached ADD result (0.4.0 and later).
const cniVersion = "1.0.0"

// cniPortMapping is one entry of the portMappings capability, as the
// portmap plugin reads it.
type cniPortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// podPortMappings lists the pod's hostPort mappings as kubelet hands them to
// the runtime: every container port with a hostPort, protocol lower-cased.
func podPortMappings(spec *corev1.PodSpec) []cniPortMapping {
	var out []cniPortMapping
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			out = append(out, cniPortMapping{
				HostPort:      p.HostPort,
				ContainerPort: p.ContainerPort,
				Protocol:      strings.ToLower(string(proto)),
				HostIP:        p.HostIP,
			})
		}
	}
	return out
}

// cniNetwork attaches pods to the first network of a CNI configuration
// directory, as containerd's CRI plugin does, and detaches them from what
// libcni's cache says they were attached to.
type cniNetwork struct {
	confDir string
	cni     *libcni.CNIConfig
}

// newCNINetwork fills in cfg's defaults and writes the default conflist
// into the configuration directory when that holds no configuration.
// ipamDir is host-local's allocation directory for the default network.
func newCNINetwork(cfg CNIConfig, ipamDir string) (*cniNetwork, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = defaultCNIConfDir
	}
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = defaultCNIBinDirs
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = libcni.CacheDir
	}
	if cfg.PodCIDR == "" {
		cfg.PodCIDR = defaultPodCIDR
	}
	if cfg.BridgeName == "" {
		cfg.BridgeName = defaultBridgeName
	}
	files, err := cniConfFiles(cfg.ConfDir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		data, err := defaultConflist(cfg.BridgeName, cfg.PodCIDR, ipamDir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(cfg.ConfDir, 0o755); err != nil {
			return nil, fmt.Errorf("create CNI configuration directory: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(cfg.ConfDir, defaultConflistName), data, 0o644); err != nil {
			return nil, fmt.Errorf("write default CNI configuration: %w", err)
		}
	}
	return &cniNetwork{
		confDir: cfg.ConfDir,
		cni:     libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, nil),
	}, nil
}

// defaultConflist is daemonlet's default network: a bridge with host-local
// addresses from podCIDR, masquerading, and hostPort mappings. portmap's
// snat makes 127.0.0.1:<hostPort> work: it masquerades the localhost source
// and sets route_localnet on the bridge so that such packets may leave lo.
func defaultConflist(bridge, podCIDR, ipamDir string) ([]byte, error) {
	type obj = map[string]any
	conf := obj{
		"cniVersion": cniVersion,
		"name":       defaultNetworkName,
		"plugins": []obj{
			{
				"type":        "bridge",
				"bridge":      bridge,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": obj{
					"type":    "host-local",
					"dataDir": ipamDir,
					"ranges":  [][]obj{{{"subnet": podCIDR}}},
					"routes":  []obj{{"dst": "0.0.0.0/0"}},
				},
			},
			{
				"type":         "portmap",
				"capabilities": obj{cniPortMappingsKey: true},
				"snat":         true,
			},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode default CNI configuration: %w", err)
	}
	return data, nil
}

// cniConfFiles lists the configuration files of dir in the order CNI
// runtimes pick them (by name). A missing dir holds none.
func cniConfFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory %s: %w", dir, err)
	}
	slices.Sort(files)
	return files, nil
}

// network loads the first configuration of the directory.
func (n *cniNetwork) network() (*libcni.NetworkConfigList, error) {
	files, err := cniConfFiles(n.confDir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI network configured in %s: %w", n.confDir, errdefs.ErrUnavailable)
	}
	file := files[0]
	if filepath.Ext(file) == ".conflist" {
		list, err := libcni.NetworkConfFromFile(file)
		if err != nil {
			return nil, fmt.Errorf("CNI configuration %s: %w: %w", file, err, errdefs.ErrInvalidArgument)
		}
		return list, nil
	}
	conf, err := libcni.ConfFromFile(file)
	if err == nil {
		var list *libcni.NetworkConfigList
		if list, err = libcni.ConfListFromConf(conf); err == nil {
			return list, nil
		}
	}
	return nil, fmt.Errorf("CNI configuration %s: %w: %w", file, err, errdefs.ErrInvalidArgument)
}

// cniArgs is CNI_ARGS for a pod, as kubelet's dockershim and containerd
// pass it: plugins that do not know a key must ignore it.
func cniArgs(pod *Pod) [][2]string {
	return [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", pod.Namespace},
		{"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", pod.UID},
	}
}

// cniIntent is what a sandbox is about to attach with, recorded in the pod
// directory before ADD. libcni caches an attachment only once every plugin
// succeeded, so a failed ADD, or a crash during one, leaves allocations that
// only this record can release.
type cniIntent struct {
	Config []byte           `json:"config"`
	Args   [][2]string      `json:"args"`
	Ports  []cniPortMapping `json:"ports,omitempty"`
}

// intent prepares the attachment of the pod to the current network.
func (n *cniNetwork) intent(pod *Pod, ports []cniPortMapping) (*cniIntent, error) {
	list, err := n.network()
	if err != nil {
		return nil, err
	}
	return &cniIntent{Config: list.Bytes, Args: cniArgs(pod), Ports: ports}, nil
}

// runtimeConf is the CNI runtime configuration of the intent.
func (in *cniIntent) runtimeConf(podUID, netns string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: podUID, NetNS: netns, IfName: podInterface, Args: in.Args}
	if len(in.Ports) > 0 {
		rt.CapabilityArgs = map[string]any{cniPortMappingsKey: in.Ports}
	}
	return rt
}

// add attaches the pod's network namespace as the intent says and returns
// the pod's IPv4 address.
func (n *cniNetwork) add(ctx context.Context, podUID, netns string, in *cniIntent) (string, error) {
	list, err := libcni.NetworkConfFromBytes(in.Config)
	if err != nil {
		return "", fmt.Errorf("CNI configuration: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	res, err := n.cni.AddNetworkList(ctx, list, in.runtimeConf(podUID, netns))
	if err != nil {
		return "", fmt.Errorf("CNI ADD to network %s: %w: %w", list.Name, err, errdefs.ErrUnavailable)
	}
	cur, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("CNI ADD to network %s: result: %w", list.Name, err)
	}
	for _, ip := range cur.IPs {
		if v4 := ip.Address.IP.To4(); v4 != nil {
			return v4.String(), nil
		}
	}
	return "", fmt.Errorf("CNI network %s gave the pod no IPv4 address: %w", list.Name, errdefs.ErrUnavailable)
}

// del detaches the pod from every network libcni's cache says it is
// attached to. It needs nothing but the pod UID: the configuration, CNI_ARGS
// and port mappings of the ADD come from the cache. When the cache holds
// nothing for the pod and an intent is known (an ADD failed or was cut
// short), DEL runs with the intent instead; plugins tolerate deleting what
// they never made. netns is the pod's network namespace if it still exists,
// else "" (plugins then only release what lives outside it, such as IP
// allocations).
func (n *cniNetwork) del(ctx context.Context, podUID, netns string, fallback *cniIntent) error {
	atts, err := n.cni.GetCachedAttachments(podUID)
	if err != nil {
		return fmt.Errorf("read CNI cache: %w", err)
	}
	type attachment struct {
		config []byte
		rt     *libcni.RuntimeConf
	}
	var todo []attachment
	for _, a := range atts {
		todo = append(todo, attachment{a.Config, &libcni.RuntimeConf{
			ContainerID:    a.ContainerID,
			NetNS:          netns,
			IfName:         a.IfName,
			Args:           a.CniArgs,
			CapabilityArgs: a.CapabilityArgs,
		}})
	}
	if len(todo) == 0 && fallback != nil {
		todo = append(todo, attachment{fallback.Config, fallback.runtimeConf(podUID, netns)})
	}
	var errs []error
	for _, a := range todo {
		list, err := libcni.NetworkConfFromBytes(a.config)
		if err != nil {
			errs = append(errs, fmt.Errorf("CNI configuration of the attachment: %w", err))
			continue
		}
		if err := n.cni.DelNetworkList(ctx, list, a.rt); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL from network %s: %w", list.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s: %w: %w", podUID, err, errdefs.ErrUnavailable)
	}
	return nil
}
