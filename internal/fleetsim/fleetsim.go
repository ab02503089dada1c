// Package fleetsim runs a daemonlet fleet inside one test process: one or
// more API servers (api/server on bbolt, or several replicas on etcd),
// served over HTTPS on 127.0.0.1, and N agents, each the agent's real code
// wired as `daemonlet agent --server` wires it (agent.Agent with its
// ServerSource, NodeSync and PodReporter, a bbolt store of its own) on the
// fake runtime (runtime/runtimetest), with a start delay and failures that
// the test injects per pod.
//
// It is for tests and benchmarks of fleet-wide behaviour: propagation,
// rollouts, status aggregation. What each agent's runtime is asked to do
// is recorded as Events (with Config.OnEvent to watch them live), and what
// it runs is Agent.Pods.
//
// Cost per agent is kept low so that thousands fit: HTTPS makes each
// agent's three watches and its writes share one HTTP/2 connection, the
// logs go nowhere unless Config.Logger says otherwise, and the heartbeat
// and report periods are settable.
//
// Lifecycle:
//
//	Start ─▶ servers up ─▶ agents started ─▶ every agent Ready ─▶ (test) ─▶ Close
//
// Close (also run by t.Cleanup) stops the agents first (their containers
// are fakes and simply vanish), then the servers, and returns once every
// goroutine fleetsim started has ended.
package fleetsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/api/server"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// AdminToken is the bearer token of the fleet's admin (group
// system:masters); node agents use NodeToken.
const AdminToken = "fleetsim-admin"

// NodeToken is the bearer token of the agent of node (user
// system:node:<node>, group system:nodes), so that the server's
// NodeRestriction applies to the simulated agents as to real ones.
func NodeToken(node string) string { return "fleetsim-node-" + node }

// Tokens is the --token-auth-file of a fleet of that many nodes: the
// admin's AdminToken and each node's NodeToken.
func Tokens(nodes int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s,admin,uid-admin,\"system:masters\"\n", AdminToken)
	for i := range nodes {
		n := NodeName(i)
		fmt.Fprintf(&b, "%s,%s%s,uid-%s,\"%s\"\n", NodeToken(n), server.NodeUserPrefix, n, n, server.GroupNodes)
	}
	return b.String()
}

// NodeName is the name of the i-th simulated node (from 0): node-00000,
// node-00001, ...
func NodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// DefaultStartTimeout bounds Start's wait for every agent to be ready.
const DefaultStartTimeout = 3 * time.Minute

// Config describes a simulated fleet. Only Nodes is required.
type Config struct {
	// Nodes is the number of agents, named NodeName(0..Nodes-1).
	Nodes int
	// Labels gives a node its --node-labels (the well-known hostname, os
	// and arch labels are always added); nil gives none.
	Labels func(node string) map[string]string
	// StartDelay is how long the runtime takes to start each container
	// of a pod (waited in StartContainer); nil or 0 starts at once.
	StartDelay func(p Pod) time.Duration
	// Fail, when it returns an error for a pod's container, makes every
	// create of that container fail with it (the agent then backs off and
	// retries, as with a broken image); nil injects nothing.
	Fail func(p Pod, container string) error
	// OnEvent, when set, receives every Event as it happens, from the
	// agents' goroutines: it must be quick and safe for concurrent use.
	OnEvent func(Event)

	// HeartbeatPeriod is the agents' --node-status-update-frequency; zero
	// means the agent's default (10 s).
	HeartbeatPeriod time.Duration
	// ReportInterval is the pod reporter's fallback period (it writes a
	// pod's change at once, and looks again every interval); zero means
	// the agent's default (agent.DefaultReportInterval).
	ReportInterval time.Duration
	// Coalesce is the server source's window: a change after a quiet
	// window goes to the sync loop at once, and those within it after a
	// set are gathered into the next; zero means the agent's default
	// (agent.DefaultServerCoalesce).
	Coalesce time.Duration
	// SyncPeriod is the agents' periodic resync; zero means the agent's
	// default.
	SyncPeriod time.Duration

	// Etcd, when set, are the client URLs of an etcd cluster that Replicas
	// servers share (with leader election), as `daemonlet server
	// --etcd-servers` does; agent i lists the replicas starting at
	// replica i mod Replicas, so that the agents spread over them and fail
	// over. Empty means one server on a bbolt store.
	Etcd []string
	// EtcdPrefix is the servers' key prefix in etcd; empty means a prefix
	// unique to this fleet.
	EtcdPrefix string
	// Replicas is the number of servers on Etcd; zero means 3. Ignored
	// without Etcd.
	Replicas int
	// NodeMonitorGracePeriod is the servers' node grace period; zero means
	// the server's default.
	NodeMonitorGracePeriod time.Duration

	// Dir holds the agents' files (the servers' are always under
	// t.TempDir(), on the test's disk); empty means t.TempDir(). Putting it
	// on a tmpfs spares thousands of agents' fsyncs queueing on one disk,
	// which a real fleet, a disk per node, does not have.
	Dir string
	// StartTimeout bounds the wait for every agent to be ready; zero
	// means DefaultStartTimeout.
	StartTimeout time.Duration
	// Logger receives every server's and agent's logs; nil discards them.
	Logger *slog.Logger
}

// Fleet is a running simulated fleet.
type Fleet struct {
	t        testing.TB
	cfg      Config
	dir      string
	log      *slog.Logger
	tls      TLSFiles
	replicas []*replica
	urls     []string
	admin    *client.Client
	agents   []*Agent
	byName   map[string]*Agent

	agentCtx    context.Context
	stopAgents  context.CancelFunc
	agentsWG    sync.WaitGroup
	closeOnce   sync.Once
	closeErrors []error
}

// replica is one in-process API server.
type replica struct {
	url   string
	http  *http.Server
	store interface{ Close() error }
	stop  context.CancelFunc
	done  chan error // Run's result
	serve chan error // Serve's result
}

// Start builds the fleet, waits until every agent is ready (its Node
// registered and its first desired set from the server synced) and
// registers Close with t.Cleanup. It fails the test on any error.
func Start(t testing.TB, cfg Config) *Fleet {
	t.Helper()
	if cfg.Nodes < 0 {
		t.Fatalf("fleetsim: %d nodes", cfg.Nodes)
	}
	f := &Fleet{t: t, cfg: cfg, dir: cfg.Dir, log: cfg.Logger, byName: map[string]*Agent{}}
	if f.dir == "" {
		f.dir = t.TempDir()
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	// The folders are made before Close is registered, so that they are
	// removed after it has run.
	serverDir := t.TempDir()
	t.Cleanup(f.Close)
	if err := f.startServers(serverDir); err != nil {
		t.Fatalf("fleetsim: %v", err)
	}
	var err error
	f.admin, err = client.New(client.Config{Servers: f.urls, Token: AdminToken, CAFile: f.tls.CertFile, UserAgent: "fleetsim-admin"})
	if err != nil {
		t.Fatalf("fleetsim: admin client: %v", err)
	}
	f.agentCtx, f.stopAgents = context.WithCancel(context.Background())
	for i := range cfg.Nodes {
		name := NodeName(i)
		a := &Agent{name: name, fleet: f, dir: filepath.Join(f.dir, "agents", name), fake: runtimetest.New(clock.RealClock{}), seen: map[string]seenDS{}}
		f.agents = append(f.agents, a)
		f.byName[name] = a
	}
	// Stores are opened in parallel: each open is a few synced writes.
	if err := f.openStores(); err != nil {
		t.Fatalf("fleetsim: %v", err)
	}
	for i, a := range f.agents {
		if err := a.run(f.agentCtx, &f.agentsWG, i); err != nil {
			t.Fatalf("fleetsim: %v", err)
		}
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	if err := f.waitReady(timeout); err != nil {
		t.Fatalf("fleetsim: %v", err)
	}
	return f
}

// startServers writes the TLS files and tokens into dir and starts the
// servers, with their bbolt store there when there is no etcd.
func (f *Fleet) startServers(dir string) error {
	var err error
	if f.tls, err = WriteTLS(dir); err != nil {
		return err
	}
	tlsCfg, err := f.tls.serverConfig()
	if err != nil {
		return err
	}
	auth, err := server.ParseTokenFile(strings.NewReader(Tokens(f.cfg.Nodes)))
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	n := 1
	if len(f.cfg.Etcd) > 0 {
		n = f.cfg.Replicas
		if n <= 0 {
			n = 3
		}
	}
	prefix := f.cfg.EtcdPrefix
	if prefix == "" {
		prefix = fmt.Sprintf("/fleetsim-%d", time.Now().UnixNano())
	}
	for i := range n {
		cfg := server.Config{Tokens: auth, Logger: f.log.With("server", i), NodeMonitorGracePeriod: f.cfg.NodeMonitorGracePeriod}
		var st interface{ Close() error }
		if len(f.cfg.Etcd) > 0 {
			db, err := cluster.OpenEtcd(cluster.EtcdConfig{Endpoints: f.cfg.Etcd, Prefix: prefix, Logger: cfg.Logger})
			if err != nil {
				return fmt.Errorf("server %d: %w", i, err)
			}
			st = db
			cfg.Store, cfg.Elector = db, cluster.NewEtcdElector(db, fmt.Sprintf("fleetsim-%d", i), 0)
			grace := f.cfg.NodeMonitorGracePeriod
			if grace == 0 {
				grace = server.DefaultNodeMonitorGracePeriod
			}
			// As `daemonlet server --etcd-servers` does: heartbeats reach
			// the leader through etcd well within the grace period.
			cfg.HeartbeatWriteInterval = grace / 2
		} else {
			db, err := cluster.OpenBolt(filepath.Join(dir, "cluster.db"), cluster.BoltOptions{Logger: cfg.Logger})
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			st, cfg.Store = db, db
		}
		r, err := startReplica(cfg, st, tlsCfg)
		if err != nil {
			st.Close()
			return fmt.Errorf("server %d: %w", i, err)
		}
		f.replicas = append(f.replicas, r)
		f.urls = append(f.urls, r.url)
	}
	return nil
}

// startReplica serves one server on a free 127.0.0.1 port over HTTPS.
func startReplica(cfg server.Config, st interface{ Close() error }, tlsCfg *tls.Config) (*replica, error) {
	srv, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{
		url:   "https://" + ln.Addr().String(),
		http:  &http.Server{Handler: srv.Handler(), TLSConfig: tlsCfg.Clone(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)},
		store: st,
		stop:  cancel,
		done:  make(chan error, 1),
		serve: make(chan error, 1),
	}
	go func() { r.done <- srv.Run(ctx) }()
	// ServeTLS with the certificate in TLSConfig also offers HTTP/2.
	go func() { r.serve <- r.http.ServeTLS(ln, "", "") }()
	return r, nil
}

// openStores opens every agent's store, a few at a time.
func (f *Fleet) openStores() error {
	work := make(chan *Agent)
	errs := make(chan error, len(f.agents))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for a := range work {
				errs <- a.openStore()
			}
		})
	}
	for _, a := range f.agents {
		work <- a
	}
	close(work)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// waitReady waits until every agent's sync loop has run on the server's
// first set.
func (f *Fleet) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pending := slices.Clone(f.agents)
	for {
		pending = slices.DeleteFunc(pending, func(a *Agent) bool { return a.agent.Ready() == nil })
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents not ready after %v (first: %s: %v)", len(pending), len(f.agents), timeout, pending[0].name, pending[0].agent.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Admin is a client of the fleet's servers with the admin's token.
func (f *Fleet) Admin() *client.Client { return f.admin }

// URLs are the servers' base URLs (https://127.0.0.1:port).
func (f *Fleet) URLs() []string { return slices.Clone(f.urls) }

// CAFile is the PEM file that verifies the servers' certificate
// (client.Config.CAFile).
func (f *Fleet) CAFile() string { return f.tls.CertFile }

// Agents are the simulated agents, in node order.
func (f *Fleet) Agents() []*Agent { return slices.Clone(f.agents) }

// Agent is the agent of node, nil if there is none.
func (f *Fleet) Agent(node string) *Agent { return f.byName[node] }

// Close stops the agents, then the servers, and waits for all of their
// goroutines; the test fails if a server stopped with an error. It may be
// called more than once.
func (f *Fleet) Close() {
	f.closeOnce.Do(func() {
		if f.stopAgents != nil {
			f.stopAgents()
		}
		f.agentsWG.Wait()
		for _, a := range f.agents {
			if a.db != nil {
				if err := a.db.Close(); err != nil {
					f.closeErrors = append(f.closeErrors, fmt.Errorf("agent %s store: %w", a.name, err))
				}
			}
		}
		for _, r := range f.replicas {
			r.stop()
			if err := <-r.done; err != nil {
				f.closeErrors = append(f.closeErrors, fmt.Errorf("server %s: %w", r.url, err))
			}
			// Close, not Shutdown: the agents are gone and the watch
			// streams ended with Run.
			if err := r.http.Close(); err != nil {
				f.closeErrors = append(f.closeErrors, fmt.Errorf("server %s: %w", r.url, err))
			}
			if err := <-r.serve; err != nil && !errors.Is(err, http.ErrServerClosed) {
				f.closeErrors = append(f.closeErrors, fmt.Errorf("server %s: %w", r.url, err))
			}
			if err := r.store.Close(); err != nil {
				f.closeErrors = append(f.closeErrors, fmt.Errorf("server %s store: %w", r.url, err))
			}
		}
		for _, err := range f.closeErrors {
			f.t.Errorf("fleetsim: close: %v", err)
		}
	})
}

// Agent is one simulated node's agent.
type Agent struct {
	name  string
	fleet *Fleet
	dir   string
	fake  *runtimetest.Fake
	agent *agent.Agent
	db    *store.DB

	mu     sync.Mutex // guards events and seen
	events []Event
	seen   map[string]seenDS // what the sync loop was last given, by DaemonSet namespace/name
}

// seenDS is the revision of a DaemonSet an agent was last given, and what
// it was computed from: the template, so its hash, changes only with the
// generation.
type seenDS struct {
	generation int64
	collisions int32
	pinned     string
	revision   string
}

// openStore opens the agent's bbolt store and builds its agent.
func (a *Agent) openStore() error {
	db, err := store.Open(filepath.Join(a.dir, "state.db"), store.Options{})
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.name, err)
	}
	a.db = db
	a.agent, err = agent.New(agent.Config{
		NodeName:   a.name,
		Node:       api.NewNode(a.name, nodeLabels(a.fleet.cfg, a.name), nil),
		Runtime:    &simRuntime{Fake: a.fake, a: a},
		Store:      db,
		Logger:     a.fleet.log.With("node", a.name),
		SyncPeriod: a.fleet.cfg.SyncPeriod,
	})
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.name, err)
	}
	return nil
}

// run starts the loops of the i-th agent as cmd/daemonlet's runAgent and
// newServerSync wire them, plus the tap that records what the server
// source hands the sync loop.
func (a *Agent) run(ctx context.Context, wg *sync.WaitGroup, i int) error {
	f := a.fleet
	logger := f.log.With("node", a.name)
	// Agent i starts with replica i mod R: the agents spread over them.
	first := i % len(f.urls)
	servers := append(slices.Clone(f.urls[first:]), f.urls[:first]...)
	c, err := client.New(client.Config{Servers: servers, Token: NodeToken(a.name), CAFile: f.tls.CertFile, UserAgent: "fleetsim-agent/" + a.name})
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.name, err)
	}
	// The source is made below, after the node sync whose Synced it
	// waits for; the node sync calls SetRevisions only once it runs.
	var source *agent.ServerSource
	node, err := agent.NewNodeSync(agent.NodeSyncConfig{
		Client:                  c,
		Node:                    api.NewNode(a.name, nodeLabels(f.cfg, a.name), nil),
		HostIP:                  "127.0.0.1",
		SetNode:                 a.agent.SetNode,
		SetRevisions:            func(revs api.NodeRevisions) { source.SetNodeRevisions(revs) },
		Frequency:               f.cfg.HeartbeatPeriod,
		ContainerRuntimeVersion: "fake://",
		KubeletVersion:          "daemonlet/fleetsim",
		Logger:                  logger,
	})
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.name, err)
	}
	reporter := agent.NewPodReporter(agent.PodReporterConfig{
		Client: c, Agent: a.agent, HostIP: "127.0.0.1", NodeUID: node.UID,
		Interval: f.cfg.ReportInterval, Logger: logger,
	})
	source = agent.NewServerSource(agent.ServerSourceConfig{
		Client: c, NodeName: a.name, Location: strings.Join(servers, ","),
		NodeSynced: node.Synced(), PodDeleted: reporter.PodDeleted,
		Coalesce: f.cfg.Coalesce, Logger: logger,
	})
	raw := make(chan agent.SourceUpdate)
	updates := make(chan agent.SourceUpdate)
	wg.Go(func() { source.Run(ctx, raw) })
	wg.Go(func() { a.tap(ctx, raw, updates) })
	wg.Go(func() { node.Run(ctx) })
	wg.Go(func() { reporter.Run(ctx) })
	wg.Go(func() {
		if err := a.agent.Run(ctx, updates, []string{source.Name()}); err != nil {
			f.t.Errorf("fleetsim: agent %s: %v", a.name, err)
		}
	})
	return nil
}

// nodeLabels is the node's configured labels, nil without Config.Labels.
func nodeLabels(cfg Config, node string) map[string]string {
	if cfg.Labels == nil {
		return nil
	}
	return cfg.Labels(node)
}

// tap forwards the server source's updates to the sync loop and records
// an EventSeen for each DaemonSet revision the agent had not been given.
func (a *Agent) tap(ctx context.Context, in <-chan agent.SourceUpdate, out chan<- agent.SourceUpdate) {
	for {
		var u agent.SourceUpdate
		select {
		case <-ctx.Done():
			return
		case u = <-in:
		}
		if u.Err == nil {
			a.see(u.DaemonSets, time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case out <- u:
		}
	}
}

// see records an EventSeen for each DaemonSet of a full set whose revision
// differs from the one the agent was last given; a DaemonSet missing from
// the set is forgotten, so that its re-creation is seen again.
func (a *Agent) see(set []*appsv1.DaemonSet, at time.Time) {
	seen := make(map[string]seenDS, len(set))
	var fresh []Event
	a.mu.Lock()
	for _, ds := range set {
		key := ds.Namespace + "/" + ds.Name
		cur := seenDS{generation: ds.Generation, pinned: ds.Annotations[agent.AnnotationRevision]}
		if ds.Status.CollisionCount != nil {
			cur.collisions = *ds.Status.CollisionCount
		}
		last, ok := a.seen[key]
		switch {
		case ok && last.generation == cur.generation && last.collisions == cur.collisions && last.pinned == cur.pinned:
			cur.revision = last.revision // same template: no hashing
		case cur.pinned != "":
			cur.revision = cur.pinned // an orphan pod's pinned revision
		default:
			cur.revision = api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
		}
		seen[key] = cur
		if !ok || last.revision != cur.revision {
			fresh = append(fresh, Event{Time: at, Kind: EventSeen, Pod: Pod{Node: a.name, Namespace: ds.Namespace, Name: ds.Name, Revision: cur.revision}, Generation: ds.Generation})
		}
	}
	a.seen = seen
	a.mu.Unlock()
	for _, e := range fresh {
		a.recordAt(e)
	}
}

// record timestamps e now and keeps it.
func (a *Agent) record(e Event) {
	e.Time = time.Now()
	a.recordAt(e)
}

func (a *Agent) recordAt(e Event) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
	if fn := a.fleet.cfg.OnEvent; fn != nil {
		fn(e)
	}
}

// Name is the agent's node name.
func (a *Agent) Name() string { return a.name }

// Events returns what the agent has been asked to do so far, in order.
func (a *Agent) Events() []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// Pods is what the agent runs now: each pod's revision, phase, worker
// state and readiness (agent.Agent.Pods).
func (a *Agent) Pods() []agent.PodStatus { return a.agent.Pods() }

// Runtime is the agent's fake runtime, for a test to act on containers
// directly (Exit, FailPull, ...); creates and starts still go through the
// fleet's StartDelay, Fail and recording.
func (a *Agent) Runtime() *runtimetest.Fake { return a.fake }

// NewDaemonSet is a minimal valid DaemonSet of one container running
// image, selected by the label app=<name>, for simulations to apply.
func NewDaemonSet(namespace, name, image string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			},
		},
	}
}

// UpdateDaemonSet is UpdateDaemonSetWith the fleet's admin client.
func (f *Fleet) UpdateDaemonSet(ctx context.Context, namespace, name string, mutate func(*appsv1.DaemonSet)) (*appsv1.DaemonSet, error) {
	return UpdateDaemonSetWith(ctx, f.admin, namespace, name, mutate)
}

// UpdateDaemonSetWith reads the DaemonSet, applies mutate and writes it
// back with c, reading again when the write conflicts (the status
// controller writes the same object), as `daemonlet apply` of a changed
// manifest would.
func UpdateDaemonSetWith(ctx context.Context, c *client.Client, namespace, name string, mutate func(*appsv1.DaemonSet)) (*appsv1.DaemonSet, error) {
	dss := c.DaemonSets(namespace)
	for {
		ds, err := dss.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		mutate(ds)
		out, err := dss.Update(ctx, ds, client.WriteOptions{})
		if !apierrors.IsConflict(err) {
			return out, err
		}
	}
}
