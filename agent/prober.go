package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/runtime"
)

// Kubelet's probe defaults (SetDefaults_Probe), applied here too because a
// probe may reach the agent without API defaulting (a zero field).
const (
	probeDefaultTimeout = time.Second
	probeDefaultPeriod  = 10 * time.Second
	probeDefaultSuccess = 1
	probeDefaultFailure = 3
)

// Bounds of an httpGet probe, as kubelet's: at most 10 redirects are
// followed and 10 KiB of the answer are read.
const (
	maxProbeRedirects = 10
	maxProbeBody      = 10 << 10
)

// probeUserAgent is the User-Agent kubelet's probes send (kube-probe/<the
// Kubernetes minor daemonlet's API types come from>), which applications
// match to tell probes from users.
const probeUserAgent = "kube-probe/1.37"

// probeKind is which of a container's three probes a worker runs.
type probeKind int

const (
	probeLiveness probeKind = iota
	probeReadiness
	probeStartup
)

var probeKinds = [...]probeKind{probeLiveness, probeReadiness, probeStartup}

func (k probeKind) String() string {
	return [...]string{"liveness", "readiness", "startup"}[k]
}

// of returns the container's probe of this kind, nil if it has none.
func (k probeKind) of(c *corev1.Container) *corev1.Probe {
	switch k {
	case probeLiveness:
		return c.LivenessProbe
	case probeReadiness:
		return c.ReadinessProbe
	}
	return c.StartupProbe
}

// initial is kubelet's result before the probe has decided anything: a
// container is not ready, is alive, and has not started.
func (k probeKind) initial() probeResult {
	switch k {
	case probeLiveness:
		return probeSuccess
	case probeReadiness:
		return probeFailure
	}
	return probeUnknown
}

// probeResult is the outcome of one probe, or a worker's decided result.
type probeResult int

const (
	// probeUnknown: the probe could not run (a result thrown away, as
	// kubelet throws away a prober error), or nothing is decided yet.
	probeUnknown probeResult = iota
	probeSuccess
	probeFailure
)

func (r probeResult) String() string {
	return [...]string{"Unknown", "Success", "Failure"}[r]
}

// probeKey names one prober worker of a pod.
type probeKey struct {
	container string
	kind      probeKind
}

// resultKey names one decided result: results belong to a container
// instance, so a restarted container starts again from the initial ones.
type resultKey struct {
	id   string
	kind probeKind
}

// probeTarget is the newest instance of a container, as the pod worker
// last observed it.
type probeTarget struct {
	id        string
	running   bool
	startedAt time.Time
}

// podProber runs the probes of one pod's app containers, one goroutine per
// (container, probe kind) as kubelet's prober workers, so that a slow probe
// delays nothing else, and keeps the decided results by container ID.
//
// The pod worker feeds it after every pass (update: the spec and the newest
// instance of each container) and reads the results when it plans (a
// liveness or startup failure stops the container) and when it publishes
// (readiness). A changed result rings the pod worker's doorbell.
type podProber struct {
	rt    Runtime
	clock clock.WithTicker
	log   *slog.Logger
	ring  func()
	wg    sync.WaitGroup // the workers' goroutines

	mu         sync.Mutex // guards the fields below
	workers    map[probeKey]*probeWorker
	containers map[string]probeTarget // by container name
	host       string                 // the pod IP, the host's with hostNetwork
	results    map[resultKey]probeResult
}

func newPodProber(rt Runtime, clk clock.WithTicker, log *slog.Logger, ring func()) *podProber {
	return &podProber{
		rt: rt, clock: clk, log: log, ring: ring,
		workers:    map[probeKey]*probeWorker{},
		containers: map[string]probeTarget{},
		results:    map[resultKey]probeResult{},
	}
}

// update hands the prober the pod's spec, the newest instance of each
// container and the address network probes reach. It starts a worker for
// each probe of the spec, replaces those of a container whose spec
// changed, stops the others, and forgets results of gone containers.
// Workers live until ctx ends or stopAll.
func (p *podProber) update(ctx context.Context, spec *corev1.PodSpec, latest map[string]runtime.Container, host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.host = host
	p.containers = make(map[string]probeTarget, len(latest))
	live := map[string]bool{}
	for name, c := range latest {
		p.containers[name] = probeTarget{id: c.ID, running: c.State == runtime.StateRunning, startedAt: c.StartedAt}
		live[c.ID] = true
	}
	for k := range p.results {
		if !live[k.id] {
			delete(p.results, k)
		}
	}
	want := map[probeKey]*corev1.Container{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, k := range probeKinds {
			if k.of(c) != nil {
				want[probeKey{c.Name, k}] = c
			}
		}
	}
	for key, w := range p.workers {
		if c, ok := want[key]; !ok || runtime.ContainerSpecHash(c) != w.hash {
			w.cancel()
			delete(p.workers, key)
		}
	}
	for key, c := range want {
		if _, ok := p.workers[key]; ok || ctx.Err() != nil {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &probeWorker{p: p, kind: key.kind, c: c.DeepCopy(), hash: runtime.ContainerSpecHash(c), cancel: cancel}
		p.workers[key] = w
		p.wg.Go(func() { w.loop(wctx) })
	}
}

// stopAll stops every worker and waits until they are gone.
func (p *podProber) stopAll() {
	p.mu.Lock()
	for key, w := range p.workers {
		w.cancel()
		delete(p.workers, key)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// result returns the decided result of a container instance's probe.
func (p *podProber) result(id string, k probeKind) probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.results[resultKey{id, k}]; ok {
		return r
	}
	return k.initial()
}

// started says whether a container instance counts as started: it has no
// startup probe, or that probe succeeded.
func (p *podProber) started(c *corev1.Container, id string) bool {
	return c.StartupProbe == nil || p.result(id, probeStartup) == probeSuccess
}

// ready says whether a running container instance is ready: started, and
// without a readiness probe or with one that succeeded.
func (p *podProber) ready(c *corev1.Container, id string) bool {
	return p.started(c, id) && (c.ReadinessProbe == nil || p.result(id, probeReadiness) == probeSuccess)
}

// failed returns the probe whose failure condemns a container instance:
// its liveness or its startup probe.
func (p *podProber) failed(c *corev1.Container, id string) (probeKind, bool) {
	for _, k := range []probeKind{probeStartup, probeLiveness} {
		if k.of(c) != nil && p.result(id, k) == probeFailure {
			return k, true
		}
	}
	return 0, false
}

// target returns the newest instance of the named container and the
// address network probes reach.
func (p *podProber) target(name string) (probeTarget, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.containers[name]
	return t, p.host, ok
}

// set records a decided result of a container instance that is still the
// newest, and rings the pod worker when it changed.
func (p *podProber) set(name, id string, k probeKind, r probeResult) {
	p.mu.Lock()
	if p.containers[name].id != id {
		p.mu.Unlock()
		return
	}
	key := resultKey{id, k}
	prev, ok := p.results[key]
	if !ok {
		prev = k.initial()
	}
	p.results[key] = r
	p.mu.Unlock()
	if prev != r {
		p.log.Info("probe result changed", "container", name, "probe", k, "result", r)
		p.ring()
	}
}

// probeWorker probes one container's probe of one kind every period, on
// the injected clock, and turns runs of equal outcomes into results.
type probeWorker struct {
	p      *podProber
	kind   probeKind
	c      *corev1.Container // a copy of the container's spec
	hash   string            // the container's spec hash, to notice a change
	cancel context.CancelFunc

	// Only the worker's goroutine touches the fields below.
	id     string      // the container instance being probed
	last   probeResult // the last outcome and how many times in a row
	run    int
	onHold bool // a liveness or startup failure: wait for a new instance
}

func (w *probeWorker) loop(ctx context.Context) {
	t := w.p.clock.NewTicker(seconds(w.kind.of(w.c).PeriodSeconds, probeDefaultPeriod))
	defer t.Stop()
	for {
		w.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// once is one period of the worker, kubelet's doProbe.
func (w *probeWorker) once(ctx context.Context) {
	t, host, ok := w.p.target(w.c.Name)
	if !ok || !t.running {
		return
	}
	if t.id != w.id {
		// A new instance starts from the initial result, with no
		// initial delay left over and no hold.
		w.id, w.last, w.run, w.onHold = t.id, probeUnknown, 0, false
	}
	if w.onHold {
		return
	}
	startup := w.p.result(t.id, probeStartup)
	if w.kind == probeStartup && startup == probeSuccess {
		return // started: the startup probe has done its job
	}
	if w.kind != probeStartup && w.c.StartupProbe != nil && startup != probeSuccess {
		return // the startup probe holds the others back
	}
	pr := w.kind.of(w.c)
	if w.p.clock.Since(t.startedAt) < seconds(pr.InitialDelaySeconds, 0) {
		return
	}
	res := w.p.probe(ctx, w.kind, w.c, t.id, host)
	if res == probeUnknown || ctx.Err() != nil {
		return
	}
	if res == w.last {
		w.run++
	} else {
		w.last, w.run = res, 1
	}
	if (res == probeFailure && w.run < threshold(pr.FailureThreshold, probeDefaultFailure)) ||
		(res == probeSuccess && w.run < threshold(pr.SuccessThreshold, probeDefaultSuccess)) {
		return
	}
	w.p.set(w.c.Name, t.id, w.kind, res)
	if res == probeFailure && w.kind != probeReadiness {
		// The container is going to be restarted; probing it again
		// would only repeat the verdict.
		w.onHold, w.run = true, 0
	}
}

// probe runs the probe once, bounded by its timeout.
func (p *podProber) probe(ctx context.Context, k probeKind, c *corev1.Container, id, host string) probeResult {
	pr := k.of(c)
	timeout := seconds(pr.TimeoutSeconds, probeDefaultTimeout)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		res    probeResult
		detail string
		err    error
	)
	switch h := pr.ProbeHandler; {
	case h.Exec != nil:
		res, detail, err = p.execProbe(pctx, id, h.Exec.Command, timeout)
	case h.HTTPGet != nil:
		res, detail, err = httpProbe(pctx, host, c, h.HTTPGet)
	case h.TCPSocket != nil:
		res, detail, err = tcpProbe(pctx, host, c, h.TCPSocket)
	case h.GRPC != nil:
		res, detail = grpcProbe(pctx, host, h.GRPC, timeout)
	default:
		err = fmt.Errorf("probe has no handler: %w", errdefs.ErrInvalidArgument)
	}
	if ctx.Err() != nil {
		return probeUnknown
	}
	if err != nil {
		p.log.Warn("probe errored", "container", c.Name, "probe", k, "err", err)
		return probeUnknown
	}
	if res == probeFailure {
		p.log.Debug("probe failed", "container", c.Name, "probe", k, "output", detail)
	}
	return res
}

// execProbe runs the command in the container: exit code 0 is a success,
// another code or the timeout a failure, and a command that cannot run an
// error.
func (p *podProber) execProbe(ctx context.Context, id string, cmd []string, timeout time.Duration) (probeResult, string, error) {
	code, out, err := p.rt.Exec(ctx, id, cmd)
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return probeFailure, fmt.Sprintf("command %q timed out after %v", cmd, timeout), nil
	case err != nil:
		return probeUnknown, "", err
	case code != 0:
		return probeFailure, fmt.Sprintf("command %q exited with %d: %s", cmd, code, out), nil
	}
	return probeSuccess, string(out), nil
}

// probeTransport is shared by the httpGet probes. Like kubelet's, it
// verifies no certificate, keeps no connection between probes, and goes
// through no proxy.
var probeTransport = &http.Transport{
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet does not verify probe certificates either
	DisableKeepAlives: true,
	Proxy:             nil,
}

// probeClient follows redirects to the same host only; a redirect
// elsewhere is answered by the redirect itself, which kubelet counts a
// success.
var probeClient = &http.Client{
	Transport: probeTransport,
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Hostname() != via[0].URL.Hostname() {
			return http.ErrUseLastResponse
		}
		if len(via) >= maxProbeRedirects {
			return fmt.Errorf("stopped after %d redirects", maxProbeRedirects)
		}
		return nil
	},
}

// httpProbe GETs the probe's URL: a status from 200 to 399 is a success,
// any other status or no answer a failure.
func httpProbe(ctx context.Context, host string, c *corev1.Container, g *corev1.HTTPGetAction) (probeResult, string, error) {
	port, err := probePort(g.Port, c)
	if err != nil {
		return probeUnknown, "", err
	}
	if g.Host != "" {
		host = g.Host
	}
	u, err := url.Parse(g.Path)
	if err != nil {
		return probeUnknown, "", fmt.Errorf("httpGet path %q: %w", g.Path, errdefs.ErrInvalidArgument)
	}
	u.Scheme = strings.ToLower(string(g.Scheme))
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return probeUnknown, "", fmt.Errorf("httpGet %s: %v: %w", u, err, errdefs.ErrInvalidArgument)
	}
	// The probe's headers replace the defaults of the same name; a Host
	// header names the virtual host.
	hdr := http.Header{}
	for _, h := range g.HTTPHeaders {
		hdr.Add(h.Name, h.Value)
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr.Set("User-Agent", probeUserAgent)
	}
	if _, ok := hdr["Accept"]; !ok {
		hdr.Set("Accept", "*/*")
	}
	req.Header = hdr
	if h := hdr.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return probeFailure, err.Error(), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if resp.StatusCode >= http.StatusOK && resp.StatusCode < http.StatusBadRequest {
		return probeSuccess, string(body), nil
	}
	return probeFailure, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode), nil
}

// tcpProbe succeeds when a connection opens within the timeout.
func tcpProbe(ctx context.Context, host string, c *corev1.Container, s *corev1.TCPSocketAction) (probeResult, string, error) {
	port, err := probePort(s.Port, c)
	if err != nil {
		return probeUnknown, "", err
	}
	if s.Host != "" {
		host = s.Host
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return probeFailure, err.Error(), nil
	}
	_ = conn.Close()
	return probeSuccess, "", nil
}

// grpcProbe asks the gRPC health service (grpc.health.v1) of the pod: only
// SERVING is a success.
func grpcProbe(ctx context.Context, host string, g *corev1.GRPCAction, timeout time.Duration) (probeResult, string) {
	addr := net.JoinHostPort(host, strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(probeUserAgent))
	if err != nil {
		return probeFailure, fmt.Sprintf("failed to connect service %q: %v", addr, err)
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		switch status.Code(err) {
		case codes.Unimplemented:
			return probeFailure, fmt.Sprintf("service %q does not implement the grpc health protocol", addr)
		case codes.DeadlineExceeded:
			return probeFailure, fmt.Sprintf("timeout: health rpc did not complete within %v", timeout)
		}
		return probeFailure, fmt.Sprintf("health rpc failed: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return probeFailure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return probeSuccess, ""
}

// probePort resolves a probe's port: a number, or the name of one of the
// container's ports.
func probePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("probe port %d: %w", port.IntVal, errdefs.ErrInvalidArgument)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("probe port %q: no container port of that name: %w", port.StrVal, errdefs.ErrNotFound)
}

// seconds turns a probe's seconds field into a duration, def when unset.
func seconds(s int32, def time.Duration) time.Duration {
	if s <= 0 {
		return def
	}
	return time.Duration(s) * time.Second
}

func threshold(n, def int32) int {
	if n <= 0 {
		return int(def)
	}
	return int(n)
}

// probeGrace is the grace period of a container stopped for a failed
// probe: the probe's terminationGracePeriodSeconds when set, else the
// pod's, never below kubelet's 2s minimum.
func probeGrace(pod *runtime.Pod, pr *corev1.Probe) time.Duration {
	if pr != nil && pr.TerminationGracePeriodSeconds != nil {
		return max(time.Duration(*pr.TerminationGracePeriodSeconds)*time.Second, minimumGracePeriod)
	}
	return terminationGrace(pod)
}

// stopUnhealthy stops the running app containers whose liveness or startup
// probe failed, each with its grace period, and reports whether it stopped
// any. The plan then sees them exited and restarts them under the crash
// back-off, so that kubelet counts such a kill as a restart.
func (w *podWorker) stopUnhealthy(ctx context.Context, pod *runtime.Pod, observed []runtime.Container) bool {
	stopped := false
	for _, oc := range observed {
		if oc.State != runtime.StateRunning || oc.Init {
			continue
		}
		c := appContainer(pod.Spec, oc.Name)
		if c == nil {
			continue
		}
		kind, failed := w.probes.failed(c, oc.ID)
		if !failed {
			continue
		}
		grace := probeGrace(pod, kind.of(c))
		w.log.Info("container failed its probe and will be restarted", "container", c.Name, "probe", kind, "grace", grace)
		if err := w.rt.StopContainer(ctx, oc.ID, grace); err != nil {
			w.m.syncError(stepRemoveContainer)
			w.log.Warn("cannot stop container", "container", oc.ID, "err", err)
			continue
		}
		stopped = true
	}
	return stopped
}

// probeHost is the address network probes of the pod reach: its sandbox's
// IP (the host's with hostNetwork). A pod adopted from an earlier agent
// learns it from its existing sandbox, once, when it has network probes.
func (w *podWorker) probeHost(ctx context.Context, pod *runtime.Pod, running bool) string {
	w.mu.Lock()
	ip := w.podIP
	w.mu.Unlock()
	if ip != "" || !running || !hasNetworkProbe(pod.Spec) {
		return ip
	}
	sb, err := w.rt.RunSandbox(ctx, pod)
	if err != nil {
		w.log.Warn("cannot look up the pod's sandbox for its probes", "err", err)
		return ""
	}
	w.mu.Lock()
	w.podIP = sb.IP
	w.mu.Unlock()
	return sb.IP
}

// hasNetworkProbe says whether a container of the spec has a probe that
// needs the pod's address.
func hasNetworkProbe(spec *corev1.PodSpec) bool {
	for i := range spec.Containers {
		for _, k := range probeKinds {
			if pr := k.of(&spec.Containers[i]); pr != nil && (pr.HTTPGet != nil || pr.TCPSocket != nil || pr.GRPC != nil) {
				return true
			}
		}
	}
	return false
}

// appContainer returns the spec's app container of that name, nil if none.
func appContainer(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}
