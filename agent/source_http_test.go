package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// manifestServer serves a manifest with an ETag, answering 304 to a
// matching If-None-Match, or a forced status.
type manifestServer struct {
	mu          sync.Mutex
	body        string
	etag        string
	status      int // when non-zero, answered instead
	ifNoneMatch []string
	token       []string
}

func (m *manifestServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ifNoneMatch = append(m.ifNoneMatch, r.Header.Get("If-None-Match"))
	m.token = append(m.token, r.Header.Get("X-Token"))
	if m.status != 0 {
		w.WriteHeader(m.status)
		return
	}
	if m.etag != "" {
		w.Header().Set("ETag", m.etag)
		if r.Header.Get("If-None-Match") == m.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Write([]byte(m.body))
}

func (m *manifestServer) set(body, etag string, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.body, m.etag, m.status = body, etag, status
}

func (m *manifestServer) lastIfNoneMatch() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ifNoneMatch[len(m.ifNoneMatch)-1]
}

func newManifestServer(t *testing.T) (*manifestServer, *httptest.Server) {
	m := &manifestServer{}
	srv := httptest.NewServer(m) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return m, srv
}

func TestHTTPSourceETagErrorsAndEmptyBody(t *testing.T) {
	m, srv := newManifestServer(t)
	m.set(dsYAML("a", "busybox")+"---\n"+podYAML("web"), `"v1"`, 0)
	s := NewHTTPSource(HTTPSourceConfig{
		URL:    srv.URL + "/manifests",
		Header: http.Header{"X-Token": {"secret"}},
		Logger: sourceTestLogger(t),
	})
	ctx := context.Background()

	u, send := s.poll(ctx)
	if !send || u.Err != nil || u.Source != SourceHTTP || !slices.Equal(updateNames(u), []string{"default/a", "default/web"}) {
		t.Fatalf("first poll: send=%v update=%+v", send, u)
	}
	if m.token[0] != "secret" {
		t.Errorf("header X-Token = %q, want the configured one", m.token[0])
	}

	// Unchanged: a conditional GET answered 304, and nothing to send.
	if _, send := s.poll(ctx); send {
		t.Error("a 304 answer sent an update")
	}
	if got := m.lastIfNoneMatch(); got != `"v1"` {
		t.Errorf("If-None-Match = %q, want the last ETag", got)
	}

	// A failing server: one error update, the previous set stays in force.
	m.set("", "", http.StatusInternalServerError)
	u, send = s.poll(ctx)
	if !send || !errdefs.IsUnavailable(u.Err) || !strings.Contains(u.Err.Error(), "500") || u.DaemonSets != nil {
		t.Fatalf("on 500: send=%v update=%+v, want an error update", send, u)
	}
	if _, send := s.poll(ctx); send {
		t.Error("the same error was sent twice")
	}
	if rep := s.Report(); !strings.Contains(rep.Error, "500") {
		t.Errorf("report = %+v, want the error", rep)
	}

	// Back, unchanged (304): the set is sent again to clear the error.
	m.set(dsYAML("a", "busybox")+"---\n"+podYAML("web"), `"v1"`, 0)
	u, send = s.poll(ctx)
	if !send || u.Err != nil || len(u.DaemonSets) != 2 {
		t.Fatalf("after recovery: send=%v update=%+v, want the set again", send, u)
	}
	if rep := s.Report(); rep.Error != "" || rep.LastSync.IsZero() {
		t.Errorf("report = %+v, want no error", rep)
	}

	// A bad body is an error update too; its ETag must not make it good.
	m.set(badDSYAML("a"), `"v2"`, 0)
	u, send = s.poll(ctx)
	if !send || !errdefs.IsInvalidArgument(u.Err) || !strings.Contains(u.Err.Error(), "spec.template.spec.containers[0].image") {
		t.Fatalf("bad body: send=%v update=%+v", send, u)
	}
	if _, send := s.poll(ctx); send {
		t.Error("the bad body, answered 304, sent an update")
	}
	if rep := s.Report(); rep.Error == "" {
		t.Error("the bad body's error was cleared by a 304")
	}

	// An empty body is an empty set.
	m.set("", `"v3"`, 0)
	u, send = s.poll(ctx)
	if !send || u.Err != nil || len(u.DaemonSets) != 0 {
		t.Fatalf("empty body: send=%v update=%+v, want an empty set", send, u)
	}
}

func TestHTTPSourceUnchangedBodyWithoutETag(t *testing.T) {
	m, srv := newManifestServer(t)
	m.set(dsYAML("a", "busybox"), "", 0)
	s := NewHTTPSource(HTTPSourceConfig{URL: srv.URL, Logger: sourceTestLogger(t)})
	if _, send := s.poll(context.Background()); !send {
		t.Fatal("first poll sent nothing")
	}
	if _, send := s.poll(context.Background()); send {
		t.Error("an unchanged body sent an update")
	}
	if got := m.lastIfNoneMatch(); got != "" {
		t.Errorf("If-None-Match = %q without an ETag", got)
	}
}

func TestHTTPSourceRunPollsPeriodically(t *testing.T) {
	m, srv := newManifestServer(t)
	m.set(dsYAML("a", "busybox"), `"1"`, 0)
	updates := runSource(t, NewHTTPSource(HTTPSourceConfig{URL: srv.URL, CheckFrequency: 50 * time.Millisecond, Logger: sourceTestLogger(t)}))
	if u := nextUpdate(t, updates, 5*time.Second); !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("set = %v", updateNames(u))
	}
	m.set(dsYAML("b", "busybox"), `"2"`, 0)
	if u := nextUpdate(t, updates, 5*time.Second); !slices.Equal(updateNames(u), []string{"default/b"}) {
		t.Fatalf("set = %v, want the new body", updateNames(u))
	}
}

func TestHTTPSourceUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	s := NewHTTPSource(HTTPSourceConfig{URL: url, Logger: sourceTestLogger(t)})
	u, send := s.poll(context.Background())
	if !send || !errdefs.IsUnavailable(u.Err) {
		t.Fatalf("send=%v update=%+v, want an unavailable error", send, u)
	}
}

func TestHTTPSourceDeliversConfigMapsAndSecrets(t *testing.T) {
	m, srv := newManifestServer(t)
	m.set("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {a: b}\n---\n"+
		"apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\ndata: {t: eA==}\n---\n"+dsYAML("a", "busybox"), "", 0)
	s := NewHTTPSource(HTTPSourceConfig{URL: srv.URL, Logger: sourceTestLogger(t)})
	u, send := s.poll(context.Background())
	if !send || u.Err != nil || !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("poll: send=%v update=%+v", send, u)
	}
	if len(u.ConfigMaps) != 1 || u.ConfigMaps[0].Data["a"] != "b" || len(u.Secrets) != 1 || string(u.Secrets[0].Data["t"]) != "x" {
		t.Errorf("objects = %+v, %+v", u.ConfigMaps, u.Secrets)
	}
}
