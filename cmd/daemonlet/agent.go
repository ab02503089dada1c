package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// Periods of the agent command's own loops.
const (
	// imagePollPeriod is how often --images-dir is checked for new tars.
	imagePollPeriod = 10 * time.Second
	// shutdownTimeout bounds the status server's graceful shutdown.
	shutdownTimeout = 5 * time.Second
	// agentRequestTimeout bounds each of the agent's requests to the
	// server other than watches.
	agentRequestTimeout = 15 * time.Second
)

func newAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: this node's daemon pods, from the server, manifest files and URLs",
		Long: `Run the node agent. It takes DaemonSets from --server (watched), and
DaemonSet (and static Pod) manifests from --pod-manifest-path and
--manifest-url, runs on containerd the pods this node's labels and taints call
for, and serves /healthz, /pods and /sources on the healthz address. With
--server it registers its Node, posts a heartbeat every
--node-status-update-frequency and reports its pods; the Node's labels and
taints on the server then rule (--node-labels and --register-with-taints apply
only when the Node is first registered). SIGHUP re-reads --config (without a
server, node labels and taints apply at once; other settings take a restart);
SIGTERM stops the agent and leaves the containers running.`,
		Args: cobra.NoArgs,
	}
	flags := agent.BindSettingsFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runAgent(cmd.Context(), flags)
	}
	cmd.AddCommand(newAgentStatusCommand())
	return cmd
}

// runAgent wires settings, store, runtime, sources and the agent, and runs
// until SIGTERM or SIGINT.
func runAgent(ctx context.Context, flags *agent.SettingsFlags) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	settings, err := flags.Load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	logDriver, err := selfPath()
	if err != nil {
		return err
	}
	db, err := store.Open(filepath.Join(settings.RootDir, "state.db"), store.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer db.Close()
	rt, err := runtime.New(ctx, runtime.Config{
		Address:         settings.ContainerRuntimeEndpoint,
		Namespace:       settings.ContainerdNamespace,
		RootDir:         settings.RootDir,
		PodLogDir:       settings.PodLogsDir,
		ContainerLogDir: settings.ContainerLogsDir,
		LogDriver:       logDriver,
		HostIP:          settings.HostIP,
		CNI: runtime.CNIConfig{
			ConfDir: settings.CNIConfDir,
			BinDirs: settings.CNIBinDirs(),
			// libcni's result cache lives with the agent's other state:
			// removing a pod after a crash or reboot needs it.
			CacheDir: filepath.Join(settings.RootDir, "cni", "cache"),
			PodCIDR:  settings.PodCIDR,
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}
	defer rt.Close()

	// A private registry: only the agent's own metrics, no global state.
	reg := prometheus.NewRegistry()
	metrics, err := agent.NewMetrics(reg, version)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		NodeName: settings.HostnameOverride,
		Node:     settings.Node(),
		Runtime:  rt,
		Store:    db,
		Logger:   logger,
		Metrics:  metrics,
	})
	if err != nil {
		return err
	}

	// What an agent killed while pulling or importing left half unpacked
	// goes before anything pulls again.
	if err := rt.ReleaseStaleImageLeases(ctx); err != nil {
		logger.Warn("releasing the image leases of an earlier agent", "err", err)
	}
	// Images first, so that an air-gapped node's pods find them at once.
	images := &imageImporter{rt: rt, dir: settings.ImagesDir, log: logger.With("imagesDir", settings.ImagesDir), seen: map[string]fileStamp{}}
	images.importNew(ctx)

	sources := settings.Sources(logger)
	server, err := newServerSync(settings, a, logger)
	if err != nil {
		return err
	}
	if server != nil {
		sources = append(sources, server.source)
	}
	names := make([]string, 0, len(sources))
	for _, s := range sources {
		names = append(names, s.Name())
	}
	if len(sources) == 0 {
		logger.Warn("no --server, --pod-manifest-path or --manifest-url: the agent only keeps what it ran before")
	}

	if err := reg.Register(agent.NewStateCollector(a, sources)); err != nil {
		return fmt.Errorf("register state metrics: %w", err)
	}
	srv, err := serveHTTP(settings.HealthzAddress(), agent.NewStatusHandler(a, sources), "/healthz, /pods and /sources", logger)
	if err != nil {
		return fmt.Errorf("healthz address: %w", err)
	}
	metricsSrv, err := serveHTTP(settings.MetricsBindAddress, agent.NewMetricsHandler(reg, a), "/metrics, /healthz and /readyz", logger)
	if err != nil {
		return fmt.Errorf("metrics bind address: %w", err)
	}

	loopCtx, cancelLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	updates := make(chan agent.SourceUpdate)
	for _, s := range sources {
		wg.Go(func() { s.Run(loopCtx, updates) })
	}
	wg.Go(func() { images.poll(loopCtx) })
	if server != nil {
		wg.Go(func() { server.node.Run(loopCtx) })
		wg.Go(func() { server.reporter.Run(loopCtx) })
	}
	wg.Go(func() { agent.NotifySystemd(loopCtx, a, logger) })
	reloader := agent.NewReloader(flags, settings, a.SetNode, logger)
	wg.Go(func() { reloadOnSIGHUP(loopCtx, reloader, flags.ConfigFile(), logger) })

	logger.Info("agent starting", "node", settings.HostnameOverride, "sources", names, "version", version)
	runErr := a.Run(ctx, updates, names)

	// Shutdown leaves the containers running (agent.Run's contract and
	// systemd's KillMode=process); only the agent's own loops stop.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyStopping); err != nil {
		logger.Warn("sd_notify STOPPING=1 failed", "err", err)
	}
	cancelLoops()
	for _, s := range []*http.Server{srv, metricsSrv} {
		if s == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := s.Shutdown(sctx); err != nil {
			logger.Warn("http server shutdown", "address", s.Addr, "err", err)
		}
		cancel()
	}
	wg.Wait()
	logger.Info("agent stopped; containers keep running")
	return runErr
}

// serverSync is the agent's side of the central server: the source of its
// DaemonSets, the Node object and the Pod objects.
type serverSync struct {
	source   *agent.ServerSource
	node     *agent.NodeSync
	reporter *agent.PodReporter
}

// newServerSync builds the server's client and the three loops that use
// it; nil without --server.
func newServerSync(s *agent.Settings, a *agent.Agent, logger *slog.Logger) (*serverSync, error) {
	if len(s.Servers) == 0 {
		return nil, nil
	}
	var token string
	if s.TokenFile != "" {
		b, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	c, err := client.New(client.Config{
		Servers:   s.Servers,
		Token:     token,
		CAFile:    s.CertificateAuthority,
		UserAgent: "daemonlet-agent/" + version,
		// A silent network cut must fail heartbeats and pod reports
		// rather than hang them; watches are not bounded by it.
		Timeout: agentRequestTimeout,
		WarningHandler: func(w string) {
			logger.Warn("server warning", "warning", w)
		},
	})
	if err != nil {
		return nil, err
	}
	// The source is made below, after the node sync whose Synced it
	// waits for; the node sync runs, and calls this, only later.
	var source *agent.ServerSource
	node, err := agent.NewNodeSync(agent.NodeSyncConfig{
		Client:       c,
		Node:         s.Node(),
		HostIP:       s.HostIP,
		SetNode:      a.SetNode,
		SetRevisions: func(revs api.NodeRevisions) { source.SetNodeRevisions(revs) },
		Frequency:    s.NodeStatusUpdateFrequency.Duration,
		// The runtime does not ask containerd its version; the name
		// alone tells kubectl-like tools the runtime.
		ContainerRuntimeVersion: "containerd://",
		KubeletVersion:          "daemonlet/" + version,
		Logger:                  logger,
	})
	if err != nil {
		return nil, err
	}
	reporter := agent.NewPodReporter(agent.PodReporterConfig{
		Client:  c,
		Agent:   a,
		HostIP:  s.HostIP,
		NodeUID: node.UID,
		Logger:  logger,
	})
	source = agent.NewServerSource(agent.ServerSourceConfig{
		Client:     c,
		NodeName:   s.HostnameOverride,
		Location:   strings.Join(s.Servers, ","),
		NodeSynced: node.Synced(),
		PodDeleted: reporter.PodDeleted,
		Logger:     logger,
	})
	return &serverSync{source: source, node: node, reporter: reporter}, nil
}

// selfPath is this binary's absolute path, symlinks resolved, for the log
// driver that containerd's shim runs: it must outlive a replaced symlink.
func selfPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable for the log driver: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("find own executable for the log driver: %w", err)
	}
	return filepath.Abs(exe)
}

// serveHTTP serves h on addr in the background; an empty addr serves
// nothing and returns a nil server. The listener is opened here, so that a
// port in use fails the start instead of a goroutine.
func serveHTTP(addr string, h http.Handler, what string, logger *slog.Logger) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", "address", addr, "err", err)
		}
	}()
	logger.Info("serving "+what, "address", addr)
	return srv, nil
}

// reloadOnSIGHUP re-reads the settings on every SIGHUP.
func reloadOnSIGHUP(ctx context.Context, r *agent.Reloader, configFile string, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		logger.Info("SIGHUP: reloading settings", "config", configFile)
		// Reload logs its own outcome, errors included.
		_, _ = r.Reload()
	}
}

// fileStamp identifies one version of an image tar.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// imageImporter imports the image tars of --images-dir: all of them at
// start, then each new or rewritten one.
type imageImporter struct {
	rt   *runtime.Runtime
	dir  string
	log  *slog.Logger
	seen map[string]fileStamp // by path; only the poll goroutine uses it after start
}

func (im *imageImporter) poll(ctx context.Context) {
	tick := time.NewTicker(imagePollPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			im.importNew(ctx)
		}
	}
}

// importNew imports every *.tar not imported in its current version. A tar
// that fails is not retried until it changes (a copy still in progress
// changes, so it is retried once complete).
func (im *imageImporter) importNew(ctx context.Context) {
	entries, err := os.ReadDir(im.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			im.log.Warn("cannot list image tars", "err", err)
		}
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".tar") {
			continue
		}
		p := filepath.Join(im.dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		stamp := fileStamp{size: fi.Size(), modTime: fi.ModTime()}
		if old, ok := im.seen[p]; ok && old == stamp {
			continue
		}
		im.seen[p] = stamp
		names, err := im.rt.ImportImage(ctx, p)
		if err != nil {
			if ctx.Err() == nil {
				im.log.Error("image import failed", "file", p, "err", err)
			}
			continue
		}
		im.log.Info("images imported", "file", p, "images", names)
	}
}

func newAgentStatusCommand() *cobra.Command {
	var address, output string
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"pods"},
		Short:   "List the pods of the agent running on this node",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case agent.OutputTable, agent.OutputWide, agent.OutputJSON, agent.OutputYAML:
			default:
				return fmt.Errorf("--output %q: expected json, yaml or wide", output)
			}
			pods, err := agent.FetchPods(cmd.Context(), address)
			if err != nil {
				return err
			}
			if len(pods) == 0 && (output == agent.OutputTable || output == agent.OutputWide) {
				fmt.Fprintln(cmd.ErrOrStderr(), "No pods found.")
				return nil
			}
			return agent.PrintPods(cmd.OutOrStdout(), pods, output, time.Now())
		},
	}
	cmd.Flags().StringVar(&address, "address", agent.DefaultHealthzAddress(), "the agent's healthz address (host:port or URL)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml or wide")
	return cmd
}
