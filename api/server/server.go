package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// DefaultNodeMonitorGracePeriod is how long a node may go without a
// heartbeat before it is marked Ready=Unknown (kube-controller-manager's
// --node-monitor-grace-period).
const DefaultNodeMonitorGracePeriod = 40 * time.Second

// Config holds the server's collaborators.
type Config struct {
	// Store holds the cluster state.
	Store cluster.Store
	// Tokens authenticates bearer tokens; nil turns authentication off
	// (every request is an admin).
	Tokens *TokenAuthenticator
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Clock is the time source of heartbeats, timestamps and controller
	// delays; nil is the real clock.
	Clock clock.Clock
	// NodeMonitorGracePeriod is how long a node may stay silent before it
	// is marked Ready=Unknown; zero means DefaultNodeMonitorGracePeriod.
	NodeMonitorGracePeriod time.Duration
	// Elector chooses the one replica that runs the fleet-wide controllers
	// among servers sharing the store; nil means a cluster.LocalElector (a
	// single server always leads).
	Elector cluster.Elector
	// HeartbeatWriteInterval, when positive, writes a heartbeat that changes
	// nothing else to the store once the stored one is that much older, so
	// that the leader sees nodes whose heartbeats reach other replicas; zero
	// keeps heartbeats in memory only (a single server).
	HeartbeatWriteInterval time.Duration
	// Metrics is the registry the server registers its metrics on and
	// serves at /metrics (with the caller's other collectors); nil is a
	// private registry of the server's own metrics.
	Metrics *prometheus.Registry
	// Encryption encrypts Secrets (and ConfigMaps, when configured) at
	// rest; nil stores them in plain.
	Encryption *Encryption
}

// Server serves the REST API over a cluster.Store and runs the
// fleet-wide controllers.
type Server struct {
	cfg   Config
	store cluster.Store
	log   *slog.Logger
	clock clock.Clock

	daemonSets, nodes, pods *resource
	configMaps, secrets     *resource
	controllerRevisions     *resource
	events                  *resource
	broadcasters            map[*resource]*broadcaster
	hooks                   map[*resource]hooks
	handler                 http.Handler

	// nodeCache and podCache hold the decoded Nodes and Pods the
	// controllers read on every sync (read-only, see decodedCache).
	nodeCache, podCache *decodedCache

	heartbeats *heartbeats
	// statusKick is the status controller's doorbell (cap 1, written
	// without blocking).
	statusKick chan struct{}
	// rolloutKick is the rollout controller's doorbell (cap 1, written
	// without blocking).
	rolloutKick chan struct{}
	running     atomic.Bool
	// metrics counts and times API requests.
	metrics *requestMetrics
	// rolloutMetrics are the rollout controller's metrics.
	rolloutMetrics *rolloutMetrics
}

// New checks the configuration and builds a server; call Run to start its
// watch fan-out and controllers.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("server: a store is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.NodeMonitorGracePeriod < 0 {
		return nil, fmt.Errorf("server: negative node monitor grace period %v: %w", cfg.NodeMonitorGracePeriod, errdefs.ErrInvalidArgument)
	}
	if cfg.NodeMonitorGracePeriod == 0 {
		cfg.NodeMonitorGracePeriod = DefaultNodeMonitorGracePeriod
	}
	if cfg.HeartbeatWriteInterval < 0 {
		return nil, fmt.Errorf("server: negative heartbeat write interval %v: %w", cfg.HeartbeatWriteInterval, errdefs.ErrInvalidArgument)
	}
	if cfg.Elector == nil {
		cfg.Elector = cluster.NewLocalElector()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	s := &Server{
		cfg: cfg, store: cfg.Store, log: cfg.Logger, clock: cfg.Clock,
		broadcasters: map[*resource]*broadcaster{},
		heartbeats:   &heartbeats{last: map[string]time.Time{}, posted: map[string]time.Time{}},
		statusKick:   make(chan struct{}, 1),
		rolloutKick:  make(chan struct{}, 1),
	}
	s.daemonSets, s.nodes, s.pods = newResources()
	s.configMaps, s.secrets = newObjectResources(cfg.Encryption)
	s.controllerRevisions, s.events = newControllerRevisionResource(), newEventResource()
	s.nodeCache, s.podCache = newDecodedCache(s.nodes), newDecodedCache(s.pods)
	for _, res := range s.resources() {
		notify := s.kickControllers
		if res == s.events {
			notify = func() {} // the controllers' own output; nothing to sync
		}
		s.broadcasters[res] = newBroadcaster(res, s.store, s.log, notify)
	}
	s.broadcasters[s.nodes].cache, s.broadcasters[s.pods].cache = s.nodeCache, s.podCache
	s.hooks = map[*resource]hooks{
		s.daemonSets: {afterWrite: s.adoptPods, beforeDelete: s.orphanPods},
		s.nodes:      {afterWrite: s.nodeWritten, afterDelete: s.deleteNodePods, statusUnchanged: s.nodeHeartbeat},
		s.pods:       {afterDelete: s.podDeleted},
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if err := s.registerMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	mux := s.routes()
	mux.Handle("GET "+PathMetrics, s.metricsHandler(cfg.Metrics))
	s.handler = s.authenticate(s.guardNodeRevisions(mux))
	return s, nil
}

// Handler is the HTTP API; watches only receive changes while Run runs.
func (s *Server) Handler() http.Handler { return s.handler }

// Run runs the watch fan-out until ctx ends, and the DaemonSet status
// controller and the node monitor whenever this replica is the elected
// leader; every watch stream ends with it.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("server: Run called twice: %w", errdefs.ErrFailedPrecondition)
	}
	var wg sync.WaitGroup
	for _, b := range s.broadcasters {
		wg.Go(func() { b.run(ctx) })
	}
	wg.Go(func() { s.lead(ctx) })
	wg.Wait()
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// electionRetry is the pause after a failed campaign (the store
// unreachable) before the next one.
const electionRetry = time.Second

// lead campaigns until ctx ends and, for each won term, runs the once-only
// controllers until the leadership is lost; leaving, it resigns so that
// another replica takes over at once instead of after the lease's TTL.
func (s *Server) lead(ctx context.Context) {
	elector := s.cfg.Elector
	defer func() {
		resignCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := elector.Resign(resignCtx); err != nil {
			s.log.Warn("resigning leadership", "error", err)
		}
	}()
	for ctx.Err() == nil {
		if err := elector.Campaign(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Error("campaigning for leadership", "error", err)
				select {
				case <-ctx.Done():
				case <-s.clock.After(electionRetry):
				}
			}
			continue
		}
		termCtx, cancel := context.WithCancel(ctx)
		lost := elector.Leading()
		go func() {
			select {
			case <-lost:
			case <-termCtx.Done():
			}
			cancel()
		}()
		s.heartbeats.newTerm()
		var wg sync.WaitGroup
		wg.Go(func() { s.runStatusController(termCtx) })
		wg.Go(func() { s.runNodeMonitor(termCtx) })
		wg.Go(func() { s.runRolloutController(termCtx) })
		s.kickControllers()
		wg.Wait()
		cancel()
	}
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	s.discoveryRoutes(mux)
	for _, res := range s.resources() {
		base := res.basePath()
		coll := base + "/" + res.name
		if res.namespaced {
			mux.Handle("GET "+coll, s.instrument(res, http.MethodGet, "", true, s.handleList(res))) // across namespaces
			coll = base + "/namespaces/{namespace}/" + res.name
		}
		item := coll + "/{name}"
		mux.Handle("GET "+coll, s.instrument(res, http.MethodGet, "", true, s.handleList(res)))
		mux.Handle("POST "+coll, s.instrument(res, http.MethodPost, "", false, s.handleCreate(res)))
		mux.Handle("GET "+item, s.instrument(res, http.MethodGet, "", false, s.handleGet(res, "")))
		mux.Handle("PUT "+item, s.instrument(res, http.MethodPut, "", false, s.handleUpdate(res, false)))
		mux.Handle("DELETE "+item, s.instrument(res, http.MethodDelete, "", false, s.handleDelete(res)))
		if res.copyStatus == nil {
			continue // no status, no /status subresource
		}
		mux.Handle("GET "+item+"/status", s.instrument(res, http.MethodGet, "status", false, s.handleGet(res, "status")))
		mux.Handle("PUT "+item+"/status", s.instrument(res, http.MethodPut, "status", false, s.handleUpdate(res, true)))
	}
	return mux
}

// resources lists every served resource.
func (s *Server) resources() []*resource {
	return []*resource{s.daemonSets, s.nodes, s.pods, s.configMaps, s.secrets, s.controllerRevisions, s.events}
}

// kickStatus asks the status controller for a sync without blocking.
func (s *Server) kickStatus() {
	select {
	case s.statusKick <- struct{}{}:
	default:
	}
}
