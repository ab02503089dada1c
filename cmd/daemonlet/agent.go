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
	"github.com/spf13/cobra"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// Periods of the agent command's own loops.
const (
	// imagePollPeriod is how often --images-dir is checked for new tars.
	imagePollPeriod = 10 * time.Second
	// readyPollPeriod is how often readiness is checked before READY=1.
	readyPollPeriod = 200 * time.Millisecond
	// shutdownTimeout bounds the status server's graceful shutdown.
	shutdownTimeout = 5 * time.Second
)

func newAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: this node's daemon pods, from manifest files and URLs",
		Long: `Run the node agent. It reads DaemonSet (and static Pod) manifests from
--pod-manifest-path and --manifest-url, runs on containerd the pods this node's
labels and taints call for, and serves /healthz, /pods and /sources on the
healthz address. SIGHUP re-reads --config (node labels and taints apply at
once); SIGTERM stops the agent and leaves the containers running.`,
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

	a, err := agent.New(agent.Config{
		NodeName: settings.HostnameOverride,
		Node:     settings.Node(),
		Runtime:  rt,
		Store:    db,
		Logger:   logger,
	})
	if err != nil {
		return err
	}

	// Images first, so that an air-gapped node's pods find them at once.
	images := &imageImporter{rt: rt, dir: settings.ImagesDir, log: logger.With("imagesDir", settings.ImagesDir), seen: map[string]fileStamp{}}
	images.importNew(ctx)

	sources := settings.Sources(logger)
	names := make([]string, 0, len(sources))
	for _, s := range sources {
		names = append(names, s.Name())
	}
	if len(sources) == 0 {
		logger.Warn("no --pod-manifest-path or --manifest-url: the agent only keeps what it ran before")
	}

	var srv *http.Server
	if addr := settings.HealthzAddress(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("healthz address: %w", err)
		}
		srv = &http.Server{Handler: agent.NewStatusHandler(a, sources), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("status server stopped", "err", err)
			}
		}()
		logger.Info("serving /healthz, /pods and /sources", "address", addr)
	}

	loopCtx, cancelLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	updates := make(chan agent.SourceUpdate)
	for _, s := range sources {
		wg.Go(func() { s.Run(loopCtx, updates) })
	}
	wg.Go(func() { images.poll(loopCtx) })
	wg.Go(func() { notifySystemd(loopCtx, a, logger) })
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
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			logger.Warn("status server shutdown", "err", err)
		}
		cancel()
	}
	wg.Wait()
	logger.Info("agent stopped; containers keep running")
	return runErr
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

// notifySystemd sends READY=1 once every source has reported (a set or an
// error) and the agent's sync loop runs, then WATCHDOG=1 at half of
// WatchdogSec for as long as the agent is healthy, so that systemd restarts
// a hung agent. Outside systemd it returns at once.
func notifySystemd(ctx context.Context, a *agent.Agent, logger *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	tick := time.NewTicker(readyPollPeriod)
	for !agentReady(a) {
		select {
		case <-ctx.Done():
			tick.Stop()
			return
		case <-tick.C:
		}
	}
	tick.Stop()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		logger.Warn("sd_notify READY=1 failed", "err", err)
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog settings unreadable; no watchdog pings", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	tick = time.NewTicker(interval / 2)
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := a.Healthy(); err != nil {
			// No ping: systemd's watchdog restarts the agent.
			if err.Error() != lastErr {
				logger.Error("agent unhealthy; withholding watchdog pings", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			logger.Warn("sd_notify WATCHDOG=1 failed", "err", err)
		}
	}
}

// agentReady says the agent has heard from every source and its sync loop
// runs.
func agentReady(a *agent.Agent) bool {
	if a.Healthy() != nil {
		return false
	}
	for _, s := range a.Sources() {
		if !s.Synced && s.Err == nil {
			return false
		}
	}
	return true
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
