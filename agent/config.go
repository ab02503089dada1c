package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/api"
)

// Settings are the agent's settings. They come from a YAML file (--config),
// with keys named like kubelet's configuration file, and from command-line
// flags named like kubelet's; a flag the user set wins over the file.
type Settings struct {
	// HostnameOverride is the node's name; it defaults to the hostname,
	// lowercased, as kubelet's.
	HostnameOverride string `json:"hostnameOverride,omitempty"`
	// NodeLabels are the node's labels, matched by nodeSelector and node
	// affinity.
	NodeLabels map[string]string `json:"nodeLabels,omitempty"`
	// RegisterWithTaints are the node's taints, matched against tolerations.
	RegisterWithTaints []corev1.Taint `json:"registerWithTaints,omitempty"`
	// PodManifestPath is the static manifest directory (or file).
	PodManifestPath string `json:"podManifestPath,omitempty"`
	// ManifestURL is polled for manifests.
	ManifestURL string `json:"manifestURL,omitempty"`
	// ManifestURLHeader is sent with every ManifestURL request.
	ManifestURLHeader map[string][]string `json:"manifestURLHeader,omitempty"`
	// RootDir holds the agent's state: state.db, pods, images.
	RootDir string `json:"rootDir,omitempty"`
	// ContainerRuntimeEndpoint is containerd's socket.
	ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint,omitempty"`
	// ContainerdNamespace is the agent's own containerd namespace.
	ContainerdNamespace string `json:"containerdNamespace,omitempty"`
	// ImagesDir is where image tars are imported from (air-gapped nodes);
	// it defaults to <rootDir>/images.
	ImagesDir string `json:"imagesDir,omitempty"`
	// PodLogsDir is kubelet's /var/log/pods.
	PodLogsDir string `json:"podLogsDir,omitempty"`
	// ContainerLogsDir holds kubelet's /var/log/containers symlinks.
	ContainerLogsDir string `json:"containerLogsDir,omitempty"`
	// HealthzBindAddress is the address of /healthz, /pods and /sources.
	HealthzBindAddress string `json:"healthzBindAddress,omitempty"`
	// HealthzPort is their port; 0 disables the endpoint, as in kubelet.
	HealthzPort int32 `json:"healthzPort"`
	// MetricsBindAddress is host:port of /metrics, /healthz and /readyz,
	// as kube-proxy's metricsBindAddress; empty disables the endpoint.
	MetricsBindAddress string `json:"metricsBindAddress"`
	// PodCIDR is the range of the default pod network.
	PodCIDR string `json:"podCIDR,omitempty"`
	// CNIConfDir holds the CNI network configurations.
	CNIConfDir string `json:"cniConfDir,omitempty"`
	// CNIBinDir is a colon-separated list of CNI plugin directories.
	CNIBinDir string `json:"cniBinDir,omitempty"`
	// HostIP is the node's address (status.hostIP); it defaults to the
	// address of the default-route interface, or 127.0.0.1.
	HostIP string `json:"hostIP,omitempty"`
	// FileCheckFrequency is how often PodManifestPath is re-read.
	FileCheckFrequency metav1.Duration `json:"fileCheckFrequency"`
	// HTTPCheckFrequency is how often ManifestURL is polled.
	HTTPCheckFrequency metav1.Duration `json:"httpCheckFrequency"`
	// Servers are the central server's URLs; the client uses the first
	// that answers. The file key takes one URL or a list.
	Servers ServerList `json:"server,omitempty"`
	// TokenFile holds the bearer token the agent presents to the server.
	TokenFile string `json:"tokenFile,omitempty"`
	// CertificateAuthority is the PEM file that verifies the server.
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	// NodeStatusUpdateFrequency is the heartbeat period, kubelet's
	// nodeStatusUpdateFrequency.
	NodeStatusUpdateFrequency metav1.Duration `json:"nodeStatusUpdateFrequency"`
}

// DefaultNodeStatusUpdateFrequency is kubelet's default heartbeat period.
const DefaultNodeStatusUpdateFrequency = 10 * time.Second

// ServerList is the server setting: in the file one URL or a list of them,
// as a flag repeated or comma-separated.
type ServerList []string

// UnmarshalJSON accepts a single string as well as a list.
func (l *ServerList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = splitServers([]string{one})
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("server: expected a URL or a list of URLs: %w", err)
	}
	*l = splitServers(many)
	return nil
}

// splitServers splits comma-separated entries and drops empty ones.
func splitServers(values []string) ServerList {
	var out ServerList
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// DefaultSettings returns the settings a flagless, fileless agent uses,
// before the per-host defaults (hostname, host IP, images dir) are filled in.
func DefaultSettings() Settings {
	return Settings{
		RootDir:                   "/var/lib/daemonlet",
		ContainerRuntimeEndpoint:  "unix:///run/containerd/containerd.sock",
		ContainerdNamespace:       "daemonlet",
		PodLogsDir:                "/var/log/pods",
		ContainerLogsDir:          "/var/log/containers",
		HealthzBindAddress:        "127.0.0.1",
		HealthzPort:               10248,
		MetricsBindAddress:        "127.0.0.1:10255",
		PodCIDR:                   "10.88.0.0/16",
		CNIConfDir:                "/etc/cni/net.d",
		CNIBinDir:                 "/usr/lib/cni:/opt/cni/bin",
		FileCheckFrequency:        metav1.Duration{Duration: DefaultCheckFrequency},
		HTTPCheckFrequency:        metav1.Duration{Duration: DefaultCheckFrequency},
		NodeStatusUpdateFrequency: metav1.Duration{Duration: DefaultNodeStatusUpdateFrequency},
	}
}

// DefaultHealthzAddress is host:port of the default healthz endpoint, where
// `daemonlet agent status` looks for the agent.
func DefaultHealthzAddress() string {
	d := DefaultSettings()
	return net.JoinHostPort(d.HealthzBindAddress, strconv.Itoa(int(d.HealthzPort)))
}

// HealthzAddress is host:port of the healthz endpoint, empty when disabled.
func (s *Settings) HealthzAddress() string {
	if s.HealthzPort == 0 {
		return ""
	}
	return net.JoinHostPort(s.HealthzBindAddress, strconv.Itoa(int(s.HealthzPort)))
}

// CNIBinDirs splits CNIBinDir into its directories.
func (s *Settings) CNIBinDirs() []string { return filepath.SplitList(s.CNIBinDir) }

// Node describes this node from the settings: its name, labels and taints.
func (s *Settings) Node() *corev1.Node {
	return api.NewNode(s.HostnameOverride, s.NodeLabels, s.RegisterWithTaints)
}

// Sources returns the manifest sources the settings configure, in the
// order that settles name conflicts: the file source first, as the one
// closest to the node's operator.
func (s *Settings) Sources(logger *slog.Logger) []Source {
	var out []Source
	if s.PodManifestPath != "" {
		out = append(out, NewFileSource(FileSourceConfig{Path: s.PodManifestPath, CheckFrequency: s.FileCheckFrequency.Duration, Logger: logger}))
	}
	if s.ManifestURL != "" {
		h := http.Header{}
		for k, vs := range s.ManifestURLHeader {
			for _, v := range vs {
				h.Add(k, v)
			}
		}
		out = append(out, NewHTTPSource(HTTPSourceConfig{URL: s.ManifestURL, Header: h, CheckFrequency: s.HTTPCheckFrequency.Duration, Logger: logger}))
	}
	return out
}

// LoadSettingsFile decodes a settings file onto s: keys it holds replace
// s's values, keys it lacks leave them. Unknown keys are errors, so that a
// typo is not silently a default.
func LoadSettingsFile(path string, s *Settings) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	next := *s
	if err := yaml.UnmarshalStrict(data, &next); err != nil {
		return fmt.Errorf("config file %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	*s = next
	return nil
}

// complete fills the per-host defaults that depend on other settings or on
// the machine, and normalises the node name as kubelet does.
func (s *Settings) complete() error {
	if s.HostnameOverride == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: no --hostname-override and no hostname: %w", err)
		}
		s.HostnameOverride = h
	}
	s.HostnameOverride = strings.ToLower(strings.TrimSpace(s.HostnameOverride))
	if s.ImagesDir == "" {
		s.ImagesDir = filepath.Join(s.RootDir, "images")
	}
	if s.HostIP == "" {
		s.HostIP = defaultHostIP()
	}
	return nil
}

// Validate checks every setting and returns one error per bad one, naming
// the file key and the flag.
func (s *Settings) Validate() error {
	var errs []error
	bad := func(key, flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s (--%s): %s: %w", key, flag, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument))
	}
	if msgs := content.IsDNS1123Subdomain(s.HostnameOverride); len(msgs) > 0 {
		bad("hostnameOverride", "hostname-override", "%q: %s", s.HostnameOverride, strings.Join(msgs, "; "))
	}
	for k, v := range s.NodeLabels {
		if msgs := content.IsLabelKey(k); len(msgs) > 0 {
			bad("nodeLabels", "node-labels", "key %q: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := content.IsLabelValue(v); len(msgs) > 0 {
			bad("nodeLabels", "node-labels", "value %q of %q: %s", v, k, strings.Join(msgs, "; "))
		}
	}
	taintSeen := map[string]bool{}
	for i, t := range s.RegisterWithTaints {
		if id := t.Key + ":" + string(t.Effect); taintSeen[id] {
			bad(fmt.Sprintf("registerWithTaints[%d]", i), "register-with-taints", "taint %s twice with the same effect", id)
		} else {
			taintSeen[id] = true
		}
		if msgs := content.IsLabelKey(t.Key); len(msgs) > 0 {
			bad(fmt.Sprintf("registerWithTaints[%d].key", i), "register-with-taints", "%q: %s", t.Key, strings.Join(msgs, "; "))
		}
		if msgs := content.IsLabelValue(t.Value); len(msgs) > 0 {
			bad(fmt.Sprintf("registerWithTaints[%d].value", i), "register-with-taints", "%q: %s", t.Value, strings.Join(msgs, "; "))
		}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			bad(fmt.Sprintf("registerWithTaints[%d].effect", i), "register-with-taints", "%q: expected NoSchedule, PreferNoSchedule or NoExecute", t.Effect)
		}
	}
	if s.ManifestURL != "" {
		u, err := url.Parse(s.ManifestURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("manifestURL", "manifest-url", "%q: expected an http:// or https:// URL", s.ManifestURL)
		}
	}
	for k := range s.ManifestURLHeader {
		if msgs := validation.IsHTTPHeaderName(k); len(msgs) > 0 {
			bad("manifestURLHeader", "manifest-url-header", "header %q: %s", k, strings.Join(msgs, "; "))
		}
	}
	for _, d := range []struct{ key, flag, path string }{
		{"rootDir", "root-dir", s.RootDir},
		{"imagesDir", "images-dir", s.ImagesDir},
		{"podLogsDir", "pod-logs-dir", s.PodLogsDir},
		{"containerLogsDir", "container-logs-dir", s.ContainerLogsDir},
		{"cniConfDir", "cni-conf-dir", s.CNIConfDir},
	} {
		if !filepath.IsAbs(d.path) {
			bad(d.key, d.flag, "%q: expected an absolute path", d.path)
		}
	}
	for _, d := range s.CNIBinDirs() {
		if !filepath.IsAbs(d) {
			bad("cniBinDir", "cni-bin-dir", "%q: expected absolute paths separated by ':'", d)
		}
	}
	if ep := strings.TrimPrefix(s.ContainerRuntimeEndpoint, "unix://"); !filepath.IsAbs(ep) {
		bad("containerRuntimeEndpoint", "container-runtime-endpoint", "%q: expected unix:///path/to/socket", s.ContainerRuntimeEndpoint)
	}
	if err := identifiers.Validate(s.ContainerdNamespace); err != nil {
		bad("containerdNamespace", "containerd-namespace", "%v", err)
	}
	if net.ParseIP(s.HealthzBindAddress) == nil {
		bad("healthzBindAddress", "healthz-bind-address", "%q: expected an IP address", s.HealthzBindAddress)
	}
	if s.HealthzPort < 0 || s.HealthzPort > 65535 {
		bad("healthzPort", "healthz-port", "%d: expected 0 (disabled) to 65535", s.HealthzPort)
	}
	if s.MetricsBindAddress != "" {
		host, port, err := net.SplitHostPort(s.MetricsBindAddress)
		if n, perr := strconv.ParseUint(port, 10, 16); err != nil || net.ParseIP(host) == nil || perr != nil || n == 0 {
			bad("metricsBindAddress", "metrics-bind-address", "%q: expected IP:port, such as 127.0.0.1:10255, or empty to disable", s.MetricsBindAddress)
		}
	}
	if _, _, err := net.ParseCIDR(s.PodCIDR); err != nil {
		bad("podCIDR", "pod-cidr", "%q: expected a CIDR such as 10.88.0.0/16", s.PodCIDR)
	}
	if net.ParseIP(s.HostIP) == nil {
		bad("hostIP", "node-ip", "%q: expected an IP address", s.HostIP)
	}
	if s.FileCheckFrequency.Duration <= 0 {
		bad("fileCheckFrequency", "file-check-frequency", "%v: expected a positive duration", s.FileCheckFrequency.Duration)
	}
	if s.HTTPCheckFrequency.Duration <= 0 {
		bad("httpCheckFrequency", "http-check-frequency", "%v: expected a positive duration", s.HTTPCheckFrequency.Duration)
	}
	for _, srv := range s.Servers {
		u, err := url.Parse(srv)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("server", "server", "%q: expected an http:// or https:// URL", srv)
		}
	}
	if s.NodeStatusUpdateFrequency.Duration <= 0 {
		bad("nodeStatusUpdateFrequency", "node-status-update-frequency", "%v: expected a positive duration", s.NodeStatusUpdateFrequency.Duration)
	}
	if len(s.Servers) == 0 && (s.TokenFile != "" || s.CertificateAuthority != "") {
		bad("server", "server", "tokenFile and certificateAuthority need a server")
	}
	return errors.Join(errs...)
}

// defaultHostIP is the first address of the interface that carries the
// default route, or 127.0.0.1 on a machine without one.
func defaultHostIP() string {
	f, err := os.Open("/proc/net/route")
	if err == nil {
		defer f.Close()
		if name := defaultRouteInterface(f); name != "" {
			if ip := interfaceIP(name); ip != "" {
				return ip
			}
		}
	}
	return "127.0.0.1"
}

// defaultRouteInterface reads /proc/net/route and returns the interface of
// the IPv4 default route with the lowest metric.
func defaultRouteInterface(r io.Reader) string {
	best, bestMetric := "", -1
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&0x1 == 0 { // RTF_UP
			continue
		}
		metric, err := strconv.Atoi(f[6])
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	return best
}

// interfaceIP returns the interface's first global unicast address,
// IPv4 before IPv6.
func interfaceIP(name string) string {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return ""
	}
	var v6 string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
		if v6 == "" {
			v6 = ipn.IP.String()
		}
	}
	return v6
}

// SettingsFlags binds Settings to command-line flags named as kubelet's,
// and loads the settings: defaults, then the --config file, then the flags
// the user set.
type SettingsFlags struct {
	config string
	vals   Settings // the flags' values, pre-set to the defaults
	apply  []flagApply
	fs     *pflag.FlagSet
}

// flagApply copies one set flag onto settings.
type flagApply struct {
	name string
	set  func(*Settings) error
}

// BindSettingsFlags registers the settings' flags (and --config) on fs.
func BindSettingsFlags(fs *pflag.FlagSet) *SettingsFlags {
	f := &SettingsFlags{vals: DefaultSettings(), fs: fs}
	fs.StringVar(&f.config, "config", "", "YAML file with the agent's settings (keys as kubelet's config file: nodeLabels, podManifestPath, ...); flags given on the command line win over it")

	str := func(name string, field func(*Settings) *string, usage string) {
		p := field(&f.vals)
		fs.StringVar(p, name, *p, usage)
		f.apply = append(f.apply, flagApply{name, func(s *Settings) error { *field(s) = *p; return nil }})
	}
	dur := func(name string, field func(*Settings) *time.Duration, usage string) {
		p := field(&f.vals)
		fs.DurationVar(p, name, *p, usage)
		f.apply = append(f.apply, flagApply{name, func(s *Settings) error { *field(s) = *p; return nil }})
	}

	str("hostname-override", func(s *Settings) *string { return &s.HostnameOverride }, "the node's name (default: the hostname, lowercased)")
	var labels string
	fs.StringVar(&labels, "node-labels", "", "the node's labels, key=value pairs separated by commas")
	f.apply = append(f.apply, flagApply{"node-labels", func(s *Settings) error {
		m, err := api.ParseNodeLabels(labels)
		if err != nil {
			return fmt.Errorf("--node-labels: %w", err)
		}
		s.NodeLabels = m
		return nil
	}})
	var taints []string
	fs.StringArrayVar(&taints, "register-with-taints", nil, "the node's taints, key[=value]:Effect separated by commas; the flag may be repeated")
	f.apply = append(f.apply, flagApply{"register-with-taints", func(s *Settings) error {
		ts, err := api.ParseTaints(taints)
		if err != nil {
			return fmt.Errorf("--register-with-taints: %w", err)
		}
		s.RegisterWithTaints = ts
		return nil
	}})
	str("pod-manifest-path", func(s *Settings) *string { return &s.PodManifestPath }, "directory (or file) of DaemonSet and static Pod manifests; files starting with '.' are ignored")
	str("manifest-url", func(s *Settings) *string { return &s.ManifestURL }, "URL that serves DaemonSet and static Pod manifests, polled every --http-check-frequency")
	var headers []string
	fs.StringArrayVar(&headers, "manifest-url-header", nil, "'Key:Value' header sent to --manifest-url; repeat the flag or separate with commas")
	f.apply = append(f.apply, flagApply{"manifest-url-header", func(s *Settings) error {
		h, err := parseHeaderFlags(headers)
		if err != nil {
			return err
		}
		s.ManifestURLHeader = h
		return nil
	}})
	str("root-dir", func(s *Settings) *string { return &s.RootDir }, "directory of the agent's state (state.db, pods, images)")
	str("container-runtime-endpoint", func(s *Settings) *string { return &s.ContainerRuntimeEndpoint }, "containerd's socket")
	str("containerd-namespace", func(s *Settings) *string { return &s.ContainerdNamespace }, "the agent's own containerd namespace")
	str("images-dir", func(s *Settings) *string { return &s.ImagesDir }, "directory of image tars imported at start and when new ones appear (default: <root-dir>/images)")
	str("pod-logs-dir", func(s *Settings) *string { return &s.PodLogsDir }, "directory of the pods' logs, as kubelet's")
	str("container-logs-dir", func(s *Settings) *string { return &s.ContainerLogsDir }, "directory of the containers' log symlinks, as kubelet's")
	str("healthz-bind-address", func(s *Settings) *string { return &s.HealthzBindAddress }, "IP address of /healthz, /pods and /sources")
	p := &f.vals.HealthzPort
	fs.Int32Var(p, "healthz-port", *p, "port of /healthz, /pods and /sources; 0 disables them")
	f.apply = append(f.apply, flagApply{"healthz-port", func(s *Settings) error { s.HealthzPort = *p; return nil }})
	str("metrics-bind-address", func(s *Settings) *string { return &s.MetricsBindAddress }, "IP:port of /metrics, /healthz and /readyz; empty disables them")
	str("pod-cidr", func(s *Settings) *string { return &s.PodCIDR }, "address range of the default pod network")
	str("cni-conf-dir", func(s *Settings) *string { return &s.CNIConfDir }, "directory of CNI network configurations")
	str("cni-bin-dir", func(s *Settings) *string { return &s.CNIBinDir }, "directories of CNI plugins, separated by ':'")
	str("node-ip", func(s *Settings) *string { return &s.HostIP }, "the node's IP address (default: the address of the default-route interface, or 127.0.0.1)")
	dur("file-check-frequency", func(s *Settings) *time.Duration { return &s.FileCheckFrequency.Duration }, "how often --pod-manifest-path is re-read besides change notifications")
	dur("http-check-frequency", func(s *Settings) *time.Duration { return &s.HTTPCheckFrequency.Duration }, "how often --manifest-url is polled")
	var servers []string
	fs.StringSliceVar(&servers, "server", nil, "URL of the central server (daemonlet server); repeat the flag or separate with commas, the first that answers is used")
	f.apply = append(f.apply, flagApply{"server", func(s *Settings) error { s.Servers = splitServers(servers); return nil }})
	str("token-file", func(s *Settings) *string { return &s.TokenFile }, "file holding the bearer token presented to --server")
	str("certificate-authority", func(s *Settings) *string { return &s.CertificateAuthority }, "PEM file of the CA that signed --server's certificate")
	dur("node-status-update-frequency", func(s *Settings) *time.Duration { return &s.NodeStatusUpdateFrequency.Duration }, "how often the node's status (its heartbeat) is posted to --server")
	return f
}

// ConfigFile is the --config path, empty when none was given.
func (f *SettingsFlags) ConfigFile() string { return f.config }

// Load builds the settings: defaults, then the --config file, then every
// flag the user set, then the per-host defaults; and validates them. It
// reads the file anew on every call, which is how SIGHUP reloads it.
func (f *SettingsFlags) Load() (*Settings, error) {
	s := DefaultSettings()
	if f.config != "" {
		if err := LoadSettingsFile(f.config, &s); err != nil {
			return nil, err
		}
	}
	for _, a := range f.apply {
		if !f.fs.Changed(a.name) {
			continue
		}
		if err := a.set(&s); err != nil {
			return nil, err
		}
	}
	if err := s.complete(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		if f.config != "" {
			return nil, fmt.Errorf("settings (flags and %s): %w", f.config, err)
		}
		return nil, fmt.Errorf("settings: %w", err)
	}
	return &s, nil
}

// parseHeaderFlags parses --manifest-url-header values: "Key:Value", several
// separated by commas, the flag repeatable, as kubelet's.
func parseHeaderFlags(values []string) (map[string][]string, error) {
	h := map[string][]string{}
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			k, val, ok := strings.Cut(item, ":")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return nil, fmt.Errorf("--manifest-url-header %q: expected Key:Value: %w", item, errdefs.ErrInvalidArgument)
			}
			h[k] = append(h[k], strings.TrimSpace(val))
		}
	}
	return h, nil
}

// Reloader re-reads the settings (on SIGHUP) and applies at once what may
// change at run time, the node's labels and taints; other changes are
// reported as needing a restart. With a server configured, the Node object
// on the server holds the node's labels and taints (--node-labels and
// --register-with-taints apply only when the node registers, as for
// kubelet), so a reload leaves them alone.
type Reloader struct {
	flags   *SettingsFlags
	setNode func(*corev1.Node)
	log     *slog.Logger

	mu      sync.Mutex // guards current
	current *Settings  // the settings in force
}

// NewReloader returns a reloader for an agent started with current;
// setNode is Agent.SetNode.
func NewReloader(flags *SettingsFlags, current *Settings, setNode func(*corev1.Node), logger *slog.Logger) *Reloader {
	if logger == nil {
		logger = slog.Default()
	}
	c := *current
	return &Reloader{flags: flags, setNode: setNode, log: logger, current: &c}
}

// Reload re-reads the settings. Bad settings are logged and returned, and
// the old ones stay. Changed node labels or taints go to setNode at once;
// the keys of other changed settings are logged and returned, since they
// take a restart.
func (r *Reloader) Reload() (needRestart []string, err error) {
	next, err := r.flags.Load()
	if err != nil {
		r.log.Error("settings reload failed; keeping the current settings", "err", err)
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.current
	if !maps.Equal(cur.NodeLabels, next.NodeLabels) || !sameTaints(cur.RegisterWithTaints, next.RegisterWithTaints) {
		cur.NodeLabels, cur.RegisterWithTaints = next.NodeLabels, next.RegisterWithTaints
		if len(cur.Servers) > 0 {
			r.log.Warn("node labels and taints changed in the settings are ignored: with a server they apply only at registration; change the Node on the server instead")
		} else {
			r.setNode(cur.Node())
			r.log.Info("node labels and taints reloaded", "labels", cur.NodeLabels, "taints", len(cur.RegisterWithTaints))
		}
	}
	needRestart = changedKeys(cur, next)
	if len(needRestart) > 0 {
		r.log.Warn("settings changed that take effect only after an agent restart", "keys", needRestart)
	} else {
		r.log.Info("settings reloaded")
	}
	return needRestart, nil
}

// sameTaints compares taint lists by key, value and effect, in order; an
// empty list equals a nil one.
func sameTaints(a, b []corev1.Taint) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.Taint) bool {
		return x.Key == y.Key && x.Value == y.Value && x.Effect == y.Effect
	})
}

// changedKeys lists the file keys whose values differ between a and b.
func changedKeys(a, b *Settings) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var keys []string
	for i := range va.NumField() {
		if reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		key, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("json"), ",")
		keys = append(keys, key)
	}
	return keys
}
