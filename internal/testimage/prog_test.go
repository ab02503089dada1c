package testimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

var (
	progOnce sync.Once
	progPath string
	progErr  error
)

// hostProg compiles the program once and returns its path, for running it
// directly on the host.
func hostProg(t *testing.T) string {
	t.Helper()
	progOnce.Do(func() {
		var src string
		if src, progErr = progDir(context.Background()); progErr != nil {
			return
		}
		var bin []byte
		if bin, progErr = compile(context.Background(), src); progErr != nil {
			return
		}
		dir, err := os.MkdirTemp("", "testimage-prog-")
		if err != nil {
			progErr = err
			return
		}
		progPath = filepath.Join(dir, "testimage")
		progErr = os.WriteFile(progPath, bin, 0o755)
	})
	if progErr != nil {
		t.Fatal(progErr)
	}
	return progPath
}

// TestMain stops the shared containerd and removes the compiled program.
func TestMain(m *testing.M) {
	code := ctdtest.Main(m)
	if progPath != "" {
		os.RemoveAll(filepath.Dir(progPath))
	}
	os.Exit(code)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestProgScripts(t *testing.T) {
	prog := hostProg(t)
	file := filepath.Join(t.TempDir(), "f")
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"exit", "3"}, 3, "testimage: exit 3 after 0s\n", ""},
		{[]string{"print", "a b", "eprint", "oops", "exit", "4", "after", "10ms"}, 4, "a b\ntestimage: exit 4 after 10ms\n", "oops\n"},
		{[]string{"write-file", file, "content", "cat", file}, 0, "testimage: write-file " + file + "\ncontent\ntestimage: script done, exit 0\n", ""},
		{[]string{"pause", "1ms", "alloc-mem", "1", "exit", "0"}, 0, "testimage: pause 1ms\ntestimage: alloc-mem 1 MiB\ntestimage: alloc-mem 1 MiB done\ntestimage: exit 0 after 0s\n", ""},
		{[]string{"bogus"}, 2, "", "testimage: unknown action \"bogus\" (at argument 1)\n"},
		{[]string{"exit", "x"}, 2, "", "testimage: exit: \"x\" is not an integer\n"},
		{[]string{"exit"}, 2, "", "testimage: exit: missing argument\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(prog, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			code := exitCode(cmd.Run())
			if code != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("exit %d stdout %q stderr %q, want %d %q %q", code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestProgPrintEnvAndID(t *testing.T) {
	prog := hostProg(t)
	cmd := exec.Command(prog, "print-env", "print-id", "print-hostname")
	cmd.Env = []string{"B=2", "A=1"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf("A=1\nB=2\nuid=%d gid=%d groups=", os.Getuid(), os.Getgid())
	if !strings.HasPrefix(string(out), want) || !strings.HasSuffix(string(out), "\nhostname="+host+"\ntestimage: script done, exit 0\n") {
		t.Errorf("output %q", out)
	}
}

// startProg starts the program and returns a reader of its stdout lines.
func startProg(t *testing.T, args ...string) (*exec.Cmd, *lineReader) {
	t.Helper()
	cmd := exec.Command(hostProg(t), args...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pw.Close()
	})
	lr := &lineReader{lines: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		var acc []byte
		for {
			n, err := pr.Read(buf)
			acc = append(acc, buf[:n]...)
			for {
				i := bytes.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lr.lines <- string(acc[:i])
				acc = acc[i+1:]
			}
			if err != nil {
				close(lr.lines)
				return
			}
		}
	}()
	return cmd, lr
}

type lineReader struct{ lines chan string }

// waitLine waits for a line containing s.
func (lr *lineReader) waitLine(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lr.lines:
			if !ok {
				t.Fatalf("output ended before a line with %q", s)
			}
			if strings.Contains(l, s) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %q within 10s", s)
		}
	}
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err)
	case <-time.After(10 * time.Second):
		t.Fatal("program did not exit within 10s")
		return -1
	}
}

func TestProgSignals(t *testing.T) {
	t.Run("default exits 0", func(t *testing.T) {
		cmd, lr := startProg(t)
		lr.waitLine(t, "sleep forever")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd); code != 0 {
			t.Errorf("exit %d", code)
		}
	})
	t.Run("ignore then on-sigterm", func(t *testing.T) {
		cmd, lr := startProg(t, "ignore-sigterm", "pause", "300ms", "on-sigterm", "7", "after", "10ms", "sleep")
		lr.waitLine(t, "pause 300ms")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		lr.waitLine(t, "got SIGTERM, ignoring it")
		lr.waitLine(t, "sleep forever")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd); code != 7 {
			t.Errorf("exit %d, want 7", code)
		}
	})
}

func TestProgServeHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, lr := startProg(t, "serve-http", fmt.Sprint(port))
	lr.waitLine(t, "script done, holding on")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/":           {200, "ok"},
		"/status/503": {503, ""},
		"/nothing":    {404, "404 page not found\n"},
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.code || string(body) != want.body {
			t.Errorf("GET %s: %d %q, want %d %q", path, resp.StatusCode, body, want.code, want.body)
		}
	}
	resp, err := http.Get(base + "/env")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "PATH=") {
		t.Errorf("GET /env: %q", body)
	}
}
