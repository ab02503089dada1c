package runtime

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func rl(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func TestCgroupNumbers(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name        string
		res         corev1.ResourceRequirements
		swap        bool
		shares      uint64
		quota       *int64
		memory, swp *int64
	}{
		{name: "none", shares: 2},
		{name: "limits only: requests default to them", res: corev1.ResourceRequirements{Limits: rl("cpu", "250m", "memory", "64Mi")},
			shares: 256, quota: i64(25000), memory: i64(64 << 20)},
		{name: "request and limit", res: corev1.ResourceRequirements{Requests: rl("cpu", "100m"), Limits: rl("cpu", "2")},
			shares: 102, quota: i64(200000)},
		{name: "tiny", res: corev1.ResourceRequirements{Limits: rl("cpu", "1m")}, shares: 2, quota: i64(1000)},
		{name: "huge request", res: corev1.ResourceRequirements{Requests: rl("cpu", "500")}, shares: 262144},
		{name: "swap pinned to the limit", res: corev1.ResourceRequirements{Limits: rl("memory", "1Gi")}, swap: true,
			shares: 2, memory: i64(1 << 30), swp: i64(1 << 30)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			f.in.Container.Resources = tc.res
			host := testHost
			host.swapControl = tc.swap
			opts, err := buildSpecOpts(f.in, host)
			if err != nil {
				t.Fatal(err)
			}
			r := f.apply(t, opts).Linux.Resources
			if r.CPU == nil || *r.CPU.Shares != tc.shares || *r.CPU.Period != *u64(100000) || !eqPtr(r.CPU.Quota, tc.quota) {
				t.Errorf("cpu = shares %v period %v quota %v; want %d, 100000, %v", deref(r.CPU.Shares), deref(r.CPU.Period), deref(r.CPU.Quota), tc.shares, deref(tc.quota))
			}
			var limit, swap *int64
			if r.Memory != nil {
				limit, swap = r.Memory.Limit, r.Memory.Swap
			}
			if !eqPtr(limit, tc.memory) || !eqPtr(swap, tc.swp) {
				t.Errorf("memory = %v swap %v; want %v, %v", deref(limit), deref(swap), deref(tc.memory), deref(tc.swp))
			}
		})
	}
}

func eqPtr[T comparable](a, b *T) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func TestPodQOS(t *testing.T) {
	c := func(res corev1.ResourceRequirements) corev1.Container {
		return corev1.Container{Name: "c", Resources: res}
	}
	full := corev1.ResourceRequirements{Limits: rl("cpu", "1", "memory", "1Gi")}
	for _, tc := range []struct {
		name       string
		containers []corev1.Container
		init       []corev1.Container
		want       corev1.PodQOSClass
	}{
		{"nothing", []corev1.Container{c(corev1.ResourceRequirements{})}, nil, corev1.PodQOSBestEffort},
		{"only ephemeral storage", []corev1.Container{c(corev1.ResourceRequirements{Limits: rl("ephemeral-storage", "1Gi")})}, nil, corev1.PodQOSBestEffort},
		{"limits imply requests", []corev1.Container{c(full)}, nil, corev1.PodQOSGuaranteed},
		{"requests equal limits", []corev1.Container{c(corev1.ResourceRequirements{Requests: rl("cpu", "1000m", "memory", "1Gi"), Limits: rl("cpu", "1", "memory", "1024Mi")})}, nil, corev1.PodQOSGuaranteed},
		{"request below limit", []corev1.Container{c(corev1.ResourceRequirements{Requests: rl("cpu", "500m"), Limits: rl("cpu", "1", "memory", "1Gi")})}, nil, corev1.PodQOSBurstable},
		{"cpu limit only", []corev1.Container{c(corev1.ResourceRequirements{Limits: rl("cpu", "1")})}, nil, corev1.PodQOSBurstable},
		{"one container without", []corev1.Container{c(full), c(corev1.ResourceRequirements{})}, nil, corev1.PodQOSBurstable},
		{"init container without", []corev1.Container{c(full)}, []corev1.Container{c(corev1.ResourceRequirements{})}, corev1.PodQOSBurstable},
		{"init container guaranteed", []corev1.Container{c(full)}, []corev1.Container{c(full)}, corev1.PodQOSGuaranteed},
	} {
		if got := podQOS(&corev1.PodSpec{Containers: tc.containers, InitContainers: tc.init}); got != tc.want {
			t.Errorf("%s: QoS = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestOOMScoreAdj(t *testing.T) {
	const capacity = 8 << 30 // testHost's memory
	always := corev1.ContainerRestartPolicyAlways
	for _, tc := range []struct {
		name string
		spec corev1.PodSpec
		init bool
		want int
	}{
		{"best effort", corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}}, false, 1000},
		{"guaranteed", corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{Limits: rl("cpu", "1", "memory", "1Gi")}}}}, false, -997},
		{"node critical best effort", corev1.PodSpec{PriorityClassName: "system-node-critical", Containers: []corev1.Container{{Name: "main"}}}, false, -997},
		{"cluster critical is not node critical", corev1.PodSpec{PriorityClassName: "system-cluster-critical", Containers: []corev1.Container{{Name: "main"}}}, false, 1000},
		{"burstable 1Gi of 8Gi", corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{Requests: rl("memory", "1Gi")}}}}, false, 875},
		{"burstable without memory request", corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1")}}}}, false, 999},
		{"burstable above capacity", corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{Requests: rl("memory", "16Gi")}}}}, false, 3},
		{"sidecar no higher than the smallest container", corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "main", RestartPolicy: &always}},
			Containers: []corev1.Container{
				{Name: "a", Resources: corev1.ResourceRequirements{Requests: rl("memory", "2Gi")}},
				{Name: "b", Resources: corev1.ResourceRequirements{Requests: rl("memory", "1Gi")}},
			}}, true, 875},
		{"plain init container", corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "main"}},
			Containers:     []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{Requests: rl("memory", "1Gi")}}}}, true, 999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &Pod{UID: "u", Spec: &tc.spec}
			list := tc.spec.Containers
			if tc.init {
				list = tc.spec.InitContainers
			}
			in := SpecInput{Pod: pod, Container: &list[0], Init: tc.init}
			if got := oomScoreAdj(in, capacity); got != tc.want {
				t.Errorf("oom_score_adj = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestOOMScoreFloor(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Container.Resources.Limits = rl("cpu", "1", "memory", "1Gi")
	host := testHost
	host.minOOMScoreAdj = 0
	opts, err := buildSpecOpts(f.in, host)
	if err != nil {
		t.Fatal(err)
	}
	if adj := *f.apply(t, opts).Process.OOMScoreAdj; adj != 0 {
		t.Errorf("guaranteed oom_score_adj = %d, want it raised to the floor 0", adj)
	}
	if adj := *f.mustSpec(t).Process.OOMScoreAdj; adj != -997 {
		t.Errorf("guaranteed oom_score_adj = %d, want -997", adj)
	}
	floor, err := minOOMScoreAdj()
	if err != nil || floor < -1000 || floor > 1000 {
		t.Errorf("minOOMScoreAdj = %d, %v", floor, err)
	}
}
