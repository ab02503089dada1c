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
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/daemonlet/daemonlet/api/server"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// serverFlags are kube-apiserver's flag names where they fit.
type serverFlags struct {
	bindAddress     string
	securePort      int
	dataDir         string
	tlsCertFile     string
	tlsKeyFile      string
	tokenAuthFile   string
	insecurePublic  bool
	nodeGracePeriod time.Duration
}

func newServerCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the central server: the DaemonSet, Node and Pod API the agents and the CLI use",
		Long: `Run the central server. It stores DaemonSets, Nodes and Pods in a bbolt file
under --data-dir, serves them over a Kubernetes-style REST API (kubectl get works
against it), streams changes to the agents, and computes DaemonSet status.
Without --tls-cert-file it speaks plain HTTP, on a loopback --bind-address only
unless --insecure-allow-plain-http-on-public-address is given. Without
--token-auth-file every request is an admin. SIGTERM stops it gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServer(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.bindAddress, "bind-address", "127.0.0.1", "the IP address to listen on")
	fl.IntVar(&f.securePort, "secure-port", 6443, "the port to listen on")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/daemonlet-server", "the directory of the server's database")
	fl.StringVar(&f.tlsCertFile, "tls-cert-file", "", "the x509 certificate (PEM) to serve HTTPS with")
	fl.StringVar(&f.tlsKeyFile, "tls-private-key-file", "", "the private key (PEM) matching --tls-cert-file")
	fl.StringVar(&f.tokenAuthFile, "token-auth-file", "", `the bearer tokens, one "token,user,uid[,\"group1,group2\"]" line each; without it authentication is off`)
	fl.BoolVar(&f.insecurePublic, "insecure-allow-plain-http-on-public-address", false,
		"allow plain HTTP (no TLS) on a non-loopback --bind-address: tokens and data then cross the network in clear text")
	fl.DurationVar(&f.nodeGracePeriod, "node-monitor-grace-period", server.DefaultNodeMonitorGracePeriod,
		"how long a node may stop posting status before it is marked Ready=Unknown")
	return cmd
}

// runServer opens the store, serves the API and runs the controllers until
// SIGTERM or SIGINT.
func runServer(ctx context.Context, f *serverFlags) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	useTLS := f.tlsCertFile != "" || f.tlsKeyFile != ""
	if useTLS && (f.tlsCertFile == "" || f.tlsKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-private-key-file go together")
	}
	ip := net.ParseIP(f.bindAddress)
	if ip == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", f.bindAddress)
	}
	if !useTLS && !ip.IsLoopback() && !f.insecurePublic {
		return fmt.Errorf("refusing plain HTTP on the non-loopback address %s: give --tls-cert-file and --tls-private-key-file, or --insecure-allow-plain-http-on-public-address", f.bindAddress)
	}
	var tokens *server.TokenAuthenticator
	if f.tokenAuthFile != "" {
		file, err := os.Open(f.tokenAuthFile)
		if err != nil {
			return fmt.Errorf("--token-auth-file: %w", err)
		}
		tokens, err = server.ParseTokenFile(file)
		file.Close()
		if err != nil {
			return fmt.Errorf("--token-auth-file %s: %w", f.tokenAuthFile, err)
		}
	} else {
		logger.Warn("no --token-auth-file: authentication is off and every request is an admin")
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	db, err := cluster.OpenBolt(filepath.Join(f.dataDir, "cluster.db"), cluster.BoltOptions{LockTimeout: 5 * time.Second, Logger: logger})
	if err != nil {
		return err
	}
	defer db.Close()
	srv, err := server.New(server.Config{Store: db, Tokens: tokens, Logger: logger, NodeMonitorGracePeriod: f.nodeGracePeriod})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	addr := net.JoinHostPort(f.bindAddress, strconv.Itoa(f.securePort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() {
		if useTLS {
			serveErr <- httpServer.ServeTLS(ln, f.tlsCertFile, f.tlsKeyFile)
		} else {
			serveErr <- httpServer.Serve(ln)
		}
	}()
	runCtx, cancelRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(runCtx) }()
	logger.Info("serving", "address", addr, "tls", useTLS, "authentication", tokens != nil)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		logger.Warn("sd_notify", "error", err)
	}

	var result error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		result = err
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	// Ending Run ends every watch stream, so that Shutdown need not wait
	// for the agents' long-lived requests.
	cancelRun()
	if err := <-runErr; err != nil && result == nil {
		result = err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil && result == nil {
		result = err
	}
	if errors.Is(result, http.ErrServerClosed) {
		result = nil
	}
	return result
}
