package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api/client"
)

// Environment variables and the configuration file of the CLI; flags win over
// the environment, the environment over the file.
const (
	envServer     = "DAEMONLET_SERVER"
	envToken      = "DAEMONLET_TOKEN"
	envConfigFile = "DAEMONLET_CONFIG"
	// requestTimeout bounds one CLI request, so a hung server does not hang
	// the shell.
	requestTimeout = 30 * time.Second
)

// clientFileConfig is the YAML of ~/.daemonlet/config.
type clientFileConfig struct {
	// Server is one URL, a comma-separated list or a YAML list.
	Server               agent.ServerList `json:"server,omitempty"`
	Token                string           `json:"token,omitempty"`
	CertificateAuthority string           `json:"certificateAuthority,omitempty"`
}

// clientFlags are the flags every client command shares.
type clientFlags struct {
	servers       []string
	token         string
	tokenFile     string
	caFile        string
	namespace     string
	allNamespaces bool
}

// addClientFlags registers the connection flags and -n on cmd (and its
// subcommands); the caller adds -A where the verb takes it.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&f.servers, "server", nil, "API server URL (repeatable or comma-separated; the first that answers is used); env "+envServer)
	pf.StringVar(&f.token, "token", "", "bearer token for the API server; env "+envToken)
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token")
	pf.StringVar(&f.caFile, "certificate-authority", "", "PEM file of the CA that signed the server's certificate")
	pf.StringVarP(&f.namespace, "namespace", "n", metav1.NamespaceDefault, "namespace of the request")
	return f
}

// addAllNamespacesFlag registers -A/--all-namespaces.
func (f *clientFlags) addAllNamespacesFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "list across all namespaces")
}

// configPath is the CLI's configuration file.
func configPath() (string, error) {
	if p := os.Getenv(envConfigFile); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".daemonlet", "config"), nil
}

// clientConfig merges flags, environment and file into a client.Config,
// without a server when none is configured anywhere.
func (f *clientFlags) clientConfig(cmd *cobra.Command) (client.Config, error) {
	var file clientFileConfig
	path, err := configPath()
	if err == nil {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return client.Config{}, fmt.Errorf("reading %s: %w", path, err)
		default:
			if err := yaml.UnmarshalStrict(data, &file); err != nil {
				return client.Config{}, fmt.Errorf("%s: %w: %w", path, errdefs.ErrInvalidArgument, err)
			}
		}
	}
	cfg := client.Config{
		Servers:   file.Server,
		Token:     file.Token,
		CAFile:    file.CertificateAuthority,
		Timeout:   requestTimeout,
		UserAgent: "daemonlet/" + version,
		WarningHandler: func(text string) {
			fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s\n", text)
		},
	}
	if v := os.Getenv(envServer); v != "" {
		cfg.Servers = splitList(v)
	}
	if v := os.Getenv(envToken); v != "" {
		cfg.Token = v
	}
	flags := cmd.Flags()
	if flags.Changed("server") {
		cfg.Servers = splitList(strings.Join(f.servers, ","))
	}
	if flags.Changed("token-file") {
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return client.Config{}, fmt.Errorf("reading token: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(data))
	}
	if flags.Changed("token") {
		cfg.Token = f.token
	}
	if flags.Changed("certificate-authority") {
		cfg.CAFile = f.caFile
	}
	return cfg, nil
}

// client builds the API client, failing when no server is configured.
func (f *clientFlags) client(cmd *cobra.Command) (*client.Client, error) {
	cfg, err := f.clientConfig(cmd)
	if err != nil {
		return nil, err
	}
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("no server configured: pass --server, set %s or write ~/.daemonlet/config: %w", envServer, errdefs.ErrInvalidArgument)
	}
	return client.New(cfg)
}

// splitList splits a comma-separated list and drops empty entries.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// errorMessage renders err as kubectl does: "Error from server (Reason):
// message" for a server's Status, "error: message" on one line otherwise.
func errorMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		st := status.Status()
		if st.Reason != "" && st.Reason != metav1.StatusReasonUnknown {
			return fmt.Sprintf("Error from server (%s): %s", st.Reason, st.Message)
		}
		return "Error from server: " + st.Message
	}
	return "error: " + strings.ReplaceAll(err.Error(), "\n", "; ")
}
