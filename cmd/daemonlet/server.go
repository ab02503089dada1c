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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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
	etcd            etcdFlags
	// encryptionConfig is kube-apiserver's --encryption-provider-config.
	encryptionConfig string
}

// etcdFlags name the etcd cluster with kube-apiserver's flags.
type etcdFlags struct {
	servers                   []string
	caFile, certFile, keyFile string
	prefix                    string
}

// add registers the etcd flags on fl.
func (e *etcdFlags) add(fl *pflag.FlagSet) {
	fl.StringSliceVar(&e.servers, "etcd-servers", nil,
		"etcd client URLs (repeatable or comma-separated); the objects are stored there instead of --data-dir, and several servers can share them")
	fl.StringVar(&e.caFile, "etcd-cafile", "", "the CA (PEM) that signs the etcd members' certificates")
	fl.StringVar(&e.certFile, "etcd-certfile", "", "the client certificate (PEM) presented to etcd")
	fl.StringVar(&e.keyFile, "etcd-keyfile", "", "the private key (PEM) of --etcd-certfile")
	fl.StringVar(&e.prefix, "etcd-prefix", cluster.DefaultEtcdPrefix, "the prefix of every etcd key the server writes")
}

// open connects to the etcd cluster the flags name.
func (e *etcdFlags) open(logger *slog.Logger) (*cluster.Etcd, error) {
	return cluster.OpenEtcd(cluster.EtcdConfig{
		Endpoints: e.servers, Prefix: e.prefix,
		CAFile: e.caFile, CertFile: e.certFile, KeyFile: e.keyFile,
		Logger: logger,
	})
}

func newServerCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the central server: the DaemonSet, Node and Pod API the agents and the CLI use",
		Long: `Run the central server. It stores DaemonSets, Nodes and Pods in a bbolt file
under --data-dir, or in etcd with --etcd-servers (then any number of servers can
share it: they all serve the API and elect one to compute status), serves them
over a Kubernetes-style REST API (kubectl get works against it), streams changes
to the agents, and computes DaemonSet status.
Without --tls-cert-file it speaks plain HTTP, on a loopback --bind-address only
unless --insecure-allow-plain-http-on-public-address is given. Without
--token-auth-file every request is an admin. /metrics (Prometheus) answers
admins and the group system:monitoring. SIGTERM stops it gracefully.`,
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
	fl.StringVar(&f.encryptionConfig, "encryption-provider-config", "",
		"an EncryptionConfiguration (apiserver.config.k8s.io/v1) file: how Secrets are encrypted at rest (aesgcm, identity); without it they are stored in plain")
	f.etcd.add(fl)
	cmd.AddCommand(newServerMigrateCommand())
	return cmd
}

// newServerMigrateCommand copies a single server's bbolt store into etcd.
func newServerMigrateCommand() *cobra.Command {
	var from string
	e := &etcdFlags{}
	cmd := &cobra.Command{
		Use:   "migrate --from-bbolt DIR --etcd-servers URL[,URL...]",
		Short: "Copy a single server's store (its --data-dir) into etcd",
		Long: `Copy every DaemonSet, Node and Pod of a stopped server's --data-dir into etcd,
for moving to servers started with --etcd-servers. Objects keep their content
but their resourceVersions renumber (etcd's revisions) and the watch history is
not copied: agents and other watchers relist. It refuses to write into an etcd
prefix that already holds objects; after a failed copy, delete the prefix and
run it again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || len(e.servers) == 0 {
				return errors.New("--from-bbolt and --etcd-servers are required")
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
			src, err := cluster.OpenBolt(filepath.Join(from, "cluster.db"), cluster.BoltOptions{LockTimeout: time.Second, Logger: logger})
			if err != nil {
				return fmt.Errorf("--from-bbolt (a server still running on it holds its lock): %w", err)
			}
			defer src.Close()
			dst, err := e.open(logger)
			if err != nil {
				return err
			}
			defer dst.Close()
			n, err := cluster.CopyStore(cmd.Context(), dst, src)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "copied %d objects from %s to etcd %s\n", n, from, e.prefix)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from-bbolt", "", "the --data-dir of the server to copy")
	e.add(fl)
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
	// A private registry: the server's metrics and its process', served
	// at /metrics to admins and the system:monitoring group.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := server.Config{Tokens: tokens, Logger: logger, NodeMonitorGracePeriod: f.nodeGracePeriod, Metrics: reg}
	if f.encryptionConfig != "" {
		enc, err := server.LoadEncryptionConfig(f.encryptionConfig)
		if err != nil {
			return fmt.Errorf("--encryption-provider-config: %w", err)
		}
		cfg.Encryption = enc
	}
	if !cfg.Encryption.Encrypts("secrets") {
		logger.Warn("Secrets are stored in plain: give --encryption-provider-config with an aesgcm provider first to encrypt them at rest")
	}
	if len(f.etcd.servers) > 0 {
		db, err := f.etcd.open(logger)
		if err != nil {
			return err
		}
		defer db.Close()
		host, _ := os.Hostname() // only names the leader for operators
		identity := fmt.Sprintf("%s:%d/%d", host, f.securePort, os.Getpid())
		cfg.Store, cfg.Elector = db, cluster.NewEtcdElector(db, identity, 0)
		// Heartbeats reaching other replicas must reach the leader's node
		// monitor through etcd well within the grace period.
		cfg.HeartbeatWriteInterval = f.nodeGracePeriod / 2
	} else {
		if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		db, err := cluster.OpenBolt(filepath.Join(f.dataDir, "cluster.db"), cluster.BoltOptions{LockTimeout: 5 * time.Second, Logger: logger})
		if err != nil {
			return err
		}
		defer db.Close()
		cfg.Store = db
	}
	srv, err := server.New(cfg)
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
