package main

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/daemonlet/daemonlet/api/server"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// startAPIServer runs the real API server on a bolt store in a temp dir and
// points the CLI at it through the environment.
func startAPIServer(t *testing.T) string {
	t.Helper()
	st, err := cluster.OpenBolt(filepath.Join(t.TempDir(), "cluster.db"), cluster.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); cancel(); <-done })
	isolateConfig(t)
	t.Setenv(envServer, hs.URL)
	return hs.URL
}

// isolateConfig keeps the user's ~/.daemonlet/config and environment out.
func isolateConfig(t *testing.T) {
	t.Helper()
	t.Setenv(envConfigFile, filepath.Join(t.TempDir(), "absent"))
	t.Setenv(envServer, "")
	t.Setenv(envToken, "")
}

// runCLI runs the command line as main does and returns stdout, stderr
// and the exit code.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	code := 0
	if err := root.Execute(); err != nil {
		errOut.WriteString(errorMessage(err) + "\n")
		code = 1
	}
	return out.String(), errOut.String(), code
}

func TestClientConfigPrecedence(t *testing.T) {
	isolateConfig(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "config")
	if err := os.WriteFile(file, []byte("server: [https://file1:6443, https://file2:6443]\ntoken: filetoken\ncertificateAuthority: /file/ca.crt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envConfigFile, file)
	load := func(args ...string) (servers, token, ca string) {
		t.Helper()
		cmd := &cobra.Command{}
		flags := addClientFlags(cmd)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := flags.clientConfig(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(cfg.Servers, ","), cfg.Token, cfg.CAFile
	}
	if s, tok, ca := load(); s != "https://file1:6443,https://file2:6443" || tok != "filetoken" || ca != "/file/ca.crt" {
		t.Errorf("file only: %q %q %q", s, tok, ca)
	}
	t.Setenv(envServer, "https://env:6443")
	t.Setenv(envToken, "envtoken")
	if s, tok, _ := load(); s != "https://env:6443" || tok != "envtoken" {
		t.Errorf("env over file: %q %q", s, tok)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("filedtoken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, tok, ca := load("--server", "https://a:1,https://b:2", "--token-file", tokenFile, "--certificate-authority", "/flag/ca")
	if s != "https://a:1,https://b:2" || tok != "filedtoken" || ca != "/flag/ca" {
		t.Errorf("flags over env: %q %q %q", s, tok, ca)
	}
	if _, tok, _ := load("--token", "flagtoken"); tok != "flagtoken" {
		t.Errorf("--token = %q", tok)
	}

	if err := os.WriteFile(file, []byte("servers: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	if _, err := addClientFlags(cmd).clientConfig(cmd); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown config field: %v, want invalid argument", err)
	}
}

func TestClientNoServerConfigured(t *testing.T) {
	isolateConfig(t)
	_, errOut, code := runCLI(t, "", "get", "ds")
	if code != 1 || !strings.HasPrefix(errOut, "error: no server configured") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestPrintErrorMessages(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	tests := []struct {
		err  error
		want string
	}{
		{apierrors.NewNotFound(gr, "x"), `Error from server (NotFound): daemonsets.apps "x" not found`},
		{errors.Join(errors.New("a.yaml: document 1: spec: bad"), errors.New("a.yaml: document 2: kind: bad")), "error: a.yaml: document 1: spec: bad; a.yaml: document 2: kind: bad"},
		{apierrors.NewGenericServerResponse(502, "get", gr, "x", "", 0, false), "Error from server (InternalError): an error on the server (\"\") has prevented the request from succeeding (get daemonsets.apps x)"},
	}
	for _, tt := range tests {
		if got := errorMessage(tt.err); got != tt.want {
			t.Errorf("errorMessage(%v) =\n%q, want\n%q", tt.err, got, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	isolateConfig(t)
	out, _, code := runCLI(t, "", "version")
	if code != 0 || out != "Client Version: dev\n" {
		t.Errorf("without a server: exit %d, %q", code, out)
	}
	startAPIServer(t)
	out, errOut, code := runCLI(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "Client Version: dev\nServer Version: ") {
		t.Errorf("with a server: exit %d, %q, %q", code, out, errOut)
	}
	t.Setenv(envServer, deadServer(t))
	if _, errOut, code := runCLI(t, "", "version"); code != 1 || !strings.HasPrefix(errOut, "error: GET /version: unavailable") {
		t.Errorf("unreachable server: exit %d, %q", code, errOut)
	}
}
