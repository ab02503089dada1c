package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// expandVars replaces $(NAME) references in s the way kubelet expands
// command, args and env values: lookup resolves a name; an unresolved
// reference and an unterminated "$(" are kept as written; "$$" is an escaped
// "$"; a "$" before any other character stays as is.
func expandVars(s string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// No closing parenthesis: "$(" is literal text.
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// envVar is one resolved container environment variable.
type envVar struct{ name, value string }

// envLookup resolves names against vars; a name defined twice takes its
// last value, as kubelet's map of resolved variables does.
func envLookup(vars []envVar) func(string) (string, bool) {
	m := make(map[string]string, len(vars))
	for _, v := range vars {
		m[v.name] = v.value
	}
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// nodeCapacity is what the node offers, used where kubelet reads node
// allocatable (resourceFieldRef without a limit) or machine capacity (OOM
// score of Burstable containers). daemonlet reserves nothing, so
// allocatable equals capacity.
type nodeCapacity struct {
	MilliCPU         int64
	Memory           int64
	EphemeralStorage int64
}

// hostCapacity measures this machine: online CPUs, MemTotal from
// /proc/meminfo and the size of the filesystem holding dir (kubelet's
// root-dir filesystem is its ephemeral-storage capacity).
func hostCapacity(dir string) (nodeCapacity, error) {
	mem, err := memTotal("/proc/meminfo")
	if err != nil {
		return nodeCapacity{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nodeCapacity{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return nodeCapacity{
		MilliCPU:         int64(goruntime.NumCPU()) * 1000,
		Memory:           mem,
		EphemeralStorage: int64(st.Blocks) * st.Bsize,
	}, nil
}

// memTotal reads MemTotal (in bytes) from a meminfo file.
func memTotal(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal %q: %w", path, f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal: %w", path, errdefs.ErrNotFound)
}

// resolveEnv computes the container's environment from its env list, in
// order, as kubelet does: a value is expanded against the variables defined
// before it; valueFrom reads the pod's fields or the container's resources.
// The image's variables are not visible to $(VAR) references.
func resolveEnv(in SpecInput, node nodeCapacity) ([]envVar, error) {
	c := in.Container
	base := containerFieldPath(in)
	vars := make([]envVar, 0, len(c.Env))
	for i, e := range c.Env {
		var val string
		switch {
		case e.Value != "":
			val = expandVars(e.Value, envLookup(vars))
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v, err := fieldRefValue(e.ValueFrom.FieldRef.FieldPath, in.Pod, in.Sandbox)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", base.Child("env").Index(i).Child("valueFrom", "fieldRef", "fieldPath"), err)
			}
			val = v
		case e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil:
			v, err := resourceFieldRefValue(e.ValueFrom.ResourceFieldRef, in.Pod, c, node)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", base.Child("env").Index(i).Child("valueFrom", "resourceFieldRef"), err)
			}
			val = v
		case e.ValueFrom != nil:
			return nil, fmt.Errorf("%s: only fieldRef and resourceFieldRef are supported: %w",
				base.Child("env").Index(i).Child("valueFrom"), errdefs.ErrNotImplemented)
		}
		vars = append(vars, envVar{e.Name, val})
	}
	return vars, nil
}

// envFieldPaths are the fieldRef paths an env variable may use (labels and
// annotations take a ['key'] subscript).
var envFieldPaths = []string{
	"metadata.name", "metadata.namespace", "metadata.uid",
	"metadata.labels['<KEY>']", "metadata.annotations['<KEY>']",
	"spec.nodeName", "spec.serviceAccountName",
	"status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
}

// fieldRefValue resolves a downward API field path for an env variable.
func fieldRefValue(path string, pod *Pod, sb *Sandbox) (string, error) {
	if base, key, ok := subscript(path); ok {
		switch base {
		case "metadata.labels":
			return pod.Labels[key], nil
		case "metadata.annotations":
			return pod.Annotations[key], nil
		}
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return pod.UID, nil
	case "spec.nodeName":
		if pod.NodeName != "" {
			return pod.NodeName, nil
		}
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return sb.HostIP, nil
	case "status.podIP", "status.podIPs":
		return sb.IP, nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q (supported: %s): %w",
		path, strings.Join(envFieldPaths, ", "), errdefs.ErrInvalidArgument)
}

// subscript splits "metadata.labels['key']" into its base and key.
func subscript(path string) (base, key string, ok bool) {
	if !strings.HasSuffix(path, "']") {
		return "", "", false
	}
	i := strings.Index(path, "['")
	if i < 0 {
		return "", "", false
	}
	return path[:i], path[i+2 : len(path)-2], true
}

// resourceFieldRefValue resolves limits.* / requests.* of the referenced
// container (this one unless containerName says otherwise), divided by the
// divisor and rounded up, as kubelet does. A missing cpu, memory or
// ephemeral-storage limit reads as the node's allocatable amount.
func resourceFieldRefValue(sel *corev1.ResourceFieldSelector, pod *Pod, self *corev1.Container, node nodeCapacity) (string, error) {
	c := self
	if sel.ContainerName != "" && sel.ContainerName != self.Name {
		c = findContainer(pod.Spec, sel.ContainerName)
		if c == nil {
			return "", fmt.Errorf("containerName %q: no such container: %w", sel.ContainerName, errdefs.ErrInvalidArgument)
		}
	}
	requests, limits := defaultedResources(c)
	for name, v := range map[corev1.ResourceName]int64{
		corev1.ResourceCPU:              node.MilliCPU,
		corev1.ResourceMemory:           node.Memory,
		corev1.ResourceEphemeralStorage: node.EphemeralStorage,
	} {
		if _, ok := limits[name]; !ok {
			if name == corev1.ResourceCPU {
				limits[name] = *resource.NewMilliQuantity(v, resource.DecimalSI)
			} else {
				limits[name] = *resource.NewQuantity(v, resource.BinarySI)
			}
		}
	}
	divisor := sel.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if divisor.MilliValue() <= 0 || divisor.Value() <= 0 {
		return "", fmt.Errorf("divisor %s must be positive: %w", divisor.String(), errdefs.ErrInvalidArgument)
	}
	kind, name, ok := strings.Cut(sel.Resource, ".")
	var list corev1.ResourceList
	switch {
	case ok && kind == "limits":
		list = limits
	case ok && kind == "requests":
		list = requests
	default:
		return "", fmt.Errorf("unsupported resource %q: %w", sel.Resource, errdefs.ErrInvalidArgument)
	}
	q := list[corev1.ResourceName(name)]
	switch {
	case name == string(corev1.ResourceCPU):
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	case name == string(corev1.ResourceMemory), name == string(corev1.ResourceEphemeralStorage):
		return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
	}
	return "", fmt.Errorf("unsupported resource %q: %w", sel.Resource, errdefs.ErrInvalidArgument)
}

// findContainer returns the named container or init container of the spec.
func findContainer(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == name {
			return &spec.InitContainers[i]
		}
	}
	return nil
}

// processArgs combines the image's entrypoint and cmd with the container's
// command and args (both expanded against env) as kubelet and containerd's
// CRI do: command replaces the entrypoint and drops the image's cmd; args
// alone replace the cmd.
func processArgs(c *corev1.Container, img ocispec.ImageConfig, env []envVar) ([]string, error) {
	lookup := envLookup(env)
	var command, args []string
	for _, s := range c.Command {
		command = append(command, expandVars(s, lookup))
	}
	for _, s := range c.Args {
		args = append(args, expandVars(s, lookup))
	}
	if len(command) == 0 {
		if len(args) == 0 {
			args = append([]string(nil), img.Cmd...)
		}
		// An entrypoint of [""] is how an image clears its base's.
		if len(img.Entrypoint) != 1 || img.Entrypoint[0] != "" {
			command = append([]string(nil), img.Entrypoint...)
		}
	}
	all := append(command, args...)
	if len(all) == 0 {
		return nil, fmt.Errorf("no command specified: neither the container nor its image set one: %w", errdefs.ErrInvalidArgument)
	}
	return all, nil
}
