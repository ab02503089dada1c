package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cap"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// CPU and OOM constants of kubelet's cgroup and QoS code.
const (
	cpuPeriod             = 100000 // µs, the CFS period kubelet uses
	minCPUQuota           = 1000   // µs
	minCPUShares          = 2
	maxCPUShares          = 262144
	sharesPerCPU          = 1024
	guaranteedOOMScoreAdj = -997
	besteffortOOMScoreAdj = 1000
	// systemNodeCritical is the priority class whose pods kubelet
	// protects like Guaranteed ones.
	systemNodeCritical = "system-node-critical"
)

// cgroupParent is where daemonlet's pod cgroups live (cgroupfs driver).
const cgroupParent = "/daemonlet"

// containerCgroupsPath is the cgroup of a container of a pod, below
// daemonlet's hierarchy: /daemonlet/pod<uid>/<container id>.
func containerCgroupsPath(podUID, containerID string) string {
	return cgroupParent + "/pod" + podUID + "/" + containerID
}

// defaultedResources returns copies of the container's requests and
// limits with each limited resource that has no request requesting its
// limit, as the API server defaults pods.
func defaultedResources(c *corev1.Container) (requests, limits corev1.ResourceList) {
	requests, limits = corev1.ResourceList{}, corev1.ResourceList{}
	for k, v := range c.Resources.Requests {
		requests[k] = v.DeepCopy()
	}
	for k, v := range c.Resources.Limits {
		limits[k] = v.DeepCopy()
		if _, ok := requests[k]; !ok {
			requests[k] = v.DeepCopy()
		}
	}
	return requests, limits
}

// podQOS classifies the pod as kubelet does from the cpu and memory of all
// its containers and init containers: BestEffort without any request or
// limit, Guaranteed when every container limits both and every request
// equals its limit, Burstable otherwise.
func podQOS(spec *corev1.PodSpec) corev1.PodQOSClass {
	requests, limits := corev1.ResourceList{}, corev1.ResourceList{}
	guaranteed := true
	all := append(append([]corev1.Container(nil), spec.Containers...), spec.InitContainers...)
	for i := range all {
		req, lim := defaultedResources(&all[i])
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := req[name]; ok && q.Sign() > 0 {
				sum := requests[name]
				sum.Add(q)
				requests[name] = sum
			}
			if q, ok := lim[name]; ok && q.Sign() > 0 {
				sum := limits[name]
				sum.Add(q)
				limits[name] = sum
			} else {
				guaranteed = false
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	if guaranteed {
		for name, req := range requests {
			if lim, ok := limits[name]; !ok || lim.Cmp(req) != 0 {
				guaranteed = false
			}
		}
	}
	if guaranteed && len(requests) == len(limits) {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// oomScoreAdj is the container's oom_score_adj as kubelet computes it:
// -997 for system-node-critical pods and Guaranteed ones, 1000 for
// BestEffort, and for Burstable 1000 minus the container's share of memory
// in thousandths, kept within [3, 999]; a sidecar (restartable init
// container) scores no higher than the pod's smallest regular container.
func oomScoreAdj(in SpecInput, memCapacity int64) int {
	spec := in.Pod.Spec
	if spec.PriorityClassName == systemNodeCritical {
		return guaranteedOOMScoreAdj
	}
	switch podQOS(spec) {
	case corev1.PodQOSGuaranteed:
		return guaranteedOOMScoreAdj
	case corev1.PodQOSBestEffort:
		return besteffortOOMScoreAdj
	}
	score := func(c *corev1.Container) int64 {
		req, _ := defaultedResources(c)
		mem := req[corev1.ResourceMemory]
		return 1000 - (1000*mem.Value())/memCapacity
	}
	adj := score(in.Container)
	sidecar := in.Init && in.Container.RestartPolicy != nil && *in.Container.RestartPolicy == corev1.ContainerRestartPolicyAlways
	if sidecar && len(spec.Containers) > 0 {
		// The smallest request gives the highest score.
		highest := score(&spec.Containers[0])
		for i := range spec.Containers[1:] {
			highest = max(highest, score(&spec.Containers[i+1]))
		}
		adj = min(adj, highest)
	}
	if adj < 1000+guaranteedOOMScoreAdj {
		return 1000 + guaranteedOOMScoreAdj
	}
	if adj == besteffortOOMScoreAdj {
		return besteffortOOMScoreAdj - 1
	}
	return int(adj)
}

// cpuShares converts a CPU request to cgroup v1 shares (containerd's
// runc converts them to cgroup v2 weight).
func cpuShares(req resource.Quantity) uint64 {
	milli := req.MilliValue()
	if milli == 0 {
		return minCPUShares
	}
	return uint64(min(max(milli*sharesPerCPU/1000, minCPUShares), maxCPUShares))
}

// cpuQuota converts a CPU limit to a CFS quota per cpuPeriod; zero means
// no limit.
func cpuQuota(limit resource.Quantity) int64 {
	milli := limit.MilliValue()
	if milli == 0 {
		return 0
	}
	return max(milli*cpuPeriod/1000, minCPUQuota)
}

// resourceOpts sets the container's cgroup, CPU shares, period and quota,
// memory limit (no swap beyond it, when the kernel can enforce that) and
// oom_score_adj.
func resourceOpts(in SpecInput, host hostInfo) []oci.SpecOpts {
	requests, limits := defaultedResources(in.Container)
	res := containerResources{
		shares: cpuShares(requests[corev1.ResourceCPU]),
		quota:  cpuQuota(limits[corev1.ResourceCPU]),
		oom:    max(oomScoreAdj(in, host.node.Memory), host.minOOMScoreAdj),
	}
	if mem, ok := limits[corev1.ResourceMemory]; ok {
		res.memory = mem.Value()
	}
	res.swap = res.memory != 0 && host.swapControl
	return []oci.SpecOpts{
		oci.WithCgroup(containerCgroupsPath(in.Pod.UID, in.ID)),
		withResources(res),
	}
}

// containerResources are the cgroup numbers of one container.
type containerResources struct {
	shares uint64
	quota  int64
	memory int64
	// swap limits memory+swap to the memory limit.
	swap bool
	oom  int
}

// withResources writes the numbers into the spec; the period is always
// set, as kubelet always sends it.
func withResources(r containerResources) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		period := uint64(cpuPeriod)
		cpu := &specs.LinuxCPU{Shares: &r.shares, Period: &period}
		if r.quota != 0 {
			cpu.Quota = &r.quota
		}
		s.Linux.Resources.CPU = cpu
		if r.memory != 0 {
			mem := &specs.LinuxMemory{Limit: &r.memory}
			if r.swap {
				mem.Swap = &r.memory
			}
			s.Linux.Resources.Memory = mem
		}
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		s.Process.OOMScoreAdj = &r.oom
		return nil
	}
}

// cgroup2 reports whether the host runs the unified cgroup v2 hierarchy.
func cgroup2() bool { return cgroups.Mode() == cgroups.Unified }

// swapControllerAvailable reports whether the memory controller can limit
// swap: memory.memsw on cgroup v1, memory.swap.max on v2 (absent from the
// root cgroup, so our own cgroup is looked at).
func swapControllerAvailable() bool {
	p := "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
	if cgroup2() {
		_, own, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
		if err != nil {
			return false
		}
		p = filepath.Join("/sys/fs/cgroup", own, "memory.swap.max")
	}
	_, err := os.Stat(p)
	return err == nil
}

// minOOMScoreAdj is the lowest oom_score_adj this process's children can
// set: without CAP_SYS_RESOURCE (an unprivileged or nested agent) the
// kernel refuses values below the process's own, so scores are raised to
// it, as containerd's restrict_oom_score_adj setting does.
func minOOMScoreAdj() (int, error) {
	caps, err := cap.Current()
	if err != nil {
		return 0, fmt.Errorf("capabilities: %w", err)
	}
	if slices.Contains(caps, "CAP_SYS_RESOURCE") {
		return -1000, nil
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, err
	}
	adj, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("/proc/self/oom_score_adj: %w", err)
	}
	return adj, nil
}
