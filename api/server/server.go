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
}

// Server serves the REST API over a cluster.Store and runs the
// fleet-wide controllers.
type Server struct {
	cfg   Config
	store cluster.Store
	log   *slog.Logger
	clock clock.Clock

	daemonSets, nodes, pods *resource
	broadcasters            map[*resource]*broadcaster
	hooks                   map[*resource]hooks
	handler                 http.Handler

	heartbeats *heartbeats
	// statusKick is the status controller's doorbell (cap 1, written
	// without blocking).
	statusKick chan struct{}
	running    atomic.Bool
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
	}
	s.daemonSets, s.nodes, s.pods = newResources()
	for _, res := range []*resource{s.daemonSets, s.nodes, s.pods} {
		s.broadcasters[res] = newBroadcaster(res, s.store, s.log, s.kickStatus)
	}
	s.hooks = map[*resource]hooks{
		s.daemonSets: {afterWrite: s.adoptPods, beforeDelete: s.orphanPods},
		s.nodes:      {afterWrite: s.nodeWritten, afterDelete: s.deleteNodePods, statusUnchanged: s.nodeHeartbeat},
		s.pods:       {},
	}
	s.handler = s.authenticate(s.routes())
	return s, nil
}

// Handler is the HTTP API; watches only receive changes while Run runs.
func (s *Server) Handler() http.Handler { return s.handler }

// Run runs the watch fan-out, the DaemonSet status controller and the node
// monitor until ctx ends; every watch stream ends with it.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("server: Run called twice: %w", errdefs.ErrFailedPrecondition)
	}
	var wg sync.WaitGroup
	for _, b := range s.broadcasters {
		wg.Go(func() { b.run(ctx) })
	}
	wg.Go(func() { s.runStatusController(ctx) })
	wg.Go(func() { s.runNodeMonitor(ctx) })
	s.kickStatus()
	wg.Wait()
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	s.discoveryRoutes(mux)
	for _, res := range []*resource{s.daemonSets, s.nodes, s.pods} {
		base := res.basePath()
		coll := base + "/" + res.name
		if res.namespaced {
			mux.Handle("GET "+coll, s.handleList(res)) // across namespaces
			coll = base + "/namespaces/{namespace}/" + res.name
		}
		item := coll + "/{name}"
		mux.Handle("GET "+coll, s.handleList(res))
		mux.Handle("POST "+coll, s.handleCreate(res))
		mux.Handle("GET "+item, s.handleGet(res, ""))
		mux.Handle("PUT "+item, s.handleUpdate(res, false))
		mux.Handle("DELETE "+item, s.handleDelete(res))
		mux.Handle("GET "+item+"/status", s.handleGet(res, "status"))
		mux.Handle("PUT "+item+"/status", s.handleUpdate(res, true))
	}
	return mux
}

// kickStatus asks the status controller for a sync without blocking.
func (s *Server) kickStatus() {
	select {
	case s.statusKick <- struct{}{}:
	default:
	}
}
