package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// DefaultHTTPTimeout is kubelet's client timeout for --manifest-url.
const DefaultHTTPTimeout = 10 * time.Second

// maxManifestBody bounds what a manifest URL may return, so that a
// misconfigured URL (a file download, say) cannot exhaust memory.
const maxManifestBody = 16 << 20

// HTTPSourceConfig configures an HTTPSource.
type HTTPSourceConfig struct {
	// URL is --manifest-url.
	URL string
	// Header is sent with every request (--manifest-url-header).
	Header http.Header
	// CheckFrequency is the poll period; zero means DefaultCheckFrequency.
	CheckFrequency time.Duration
	// Client makes the requests; nil means a client with DefaultHTTPTimeout.
	Client *http.Client
	// Logger receives fetch and decode errors; nil means slog.Default().
	Logger *slog.Logger
}

// HTTPSource polls a URL that serves manifests (the same multi-document
// YAML or JSON as a manifest file), as kubelet's --manifest-url. It sends
// If-None-Match with the last ETag, so an unchanged manifest costs a 304; an
// unchanged body is a no-op; an empty body is an empty set. A failed request,
// a non-200 answer or a rejected body is sent as an error update, which
// keeps the previous set in force.
type HTTPSource struct {
	url    string
	header http.Header
	period time.Duration
	client *http.Client
	log    *slog.Logger

	mu          sync.Mutex // guards the fields below
	report      SourceReport
	etag        string // of the last 200 answer
	haveBody    bool   // a 200 answer was read
	sum         [sha256.Size]byte
	set         manifest // decoded from the last good body
	contentErr  error    // why the last body was rejected
	dirty       bool     // set has not been sent yet
	lastSentErr string   // text of the error update last sent
}

var _ Source = (*HTTPSource)(nil)

// NewHTTPSource returns an HTTP source; Run starts it.
func NewHTTPSource(cfg HTTPSourceConfig) *HTTPSource {
	s := &HTTPSource{
		url:    cfg.URL,
		header: cfg.Header.Clone(),
		period: cfg.CheckFrequency,
		client: cfg.Client,
		log:    cfg.Logger,
		dirty:  true,
	}
	if s.period <= 0 {
		s.period = DefaultCheckFrequency
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("source", SourceHTTP, "url", cfg.URL)
	s.report = SourceReport{Name: SourceHTTP, Location: cfg.URL}
	return s
}

// Name returns SourceHTTP.
func (s *HTTPSource) Name() string { return SourceHTTP }

// Report returns the last poll's outcome.
func (s *HTTPSource) Report() SourceReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.report
	r.FileErrors = slices.Clone(r.FileErrors)
	return r
}

// Run polls at once and then every CheckFrequency until ctx ends.
func (s *HTTPSource) Run(ctx context.Context, updates chan<- SourceUpdate) {
	ticker := time.NewTicker(s.period)
	defer ticker.Stop()
	for {
		if u, send := s.poll(ctx); send && !sendUpdate(ctx, updates, u) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// poll fetches the URL once and returns the update to send, if any: a set
// when it changed (or when the source recovers from an error), an error
// update when the error is new.
func (s *HTTPSource) poll(ctx context.Context) (SourceUpdate, bool) {
	body, notModified, fetchErr := s.get(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.report.LastAttempt = now
	if fetchErr != nil {
		if ctx.Err() != nil {
			return SourceUpdate{}, false
		}
		return s.failLocked(fetchErr)
	}
	if notModified && !s.haveBody {
		return s.failLocked(fmt.Errorf("GET %s: 304 Not Modified without a previous answer: %w", s.url, errdefs.ErrUnavailable))
	}
	if !notModified {
		sum := sha256.Sum256(body)
		if !s.haveBody || sum != s.sum {
			s.haveBody, s.sum = true, sum
			s.contentErr = nil
			var m manifest
			if len(bytes.TrimSpace(body)) > 0 {
				m, s.contentErr = decodeManifest(s.url, body)
			}
			if s.contentErr == nil {
				s.set, s.dirty = m, true
			}
		}
	}
	if s.contentErr != nil {
		return s.failLocked(s.contentErr)
	}
	s.report.Error, s.report.LastSync = "", now
	if !s.dirty && s.lastSentErr == "" {
		return SourceUpdate{}, false
	}
	s.dirty, s.lastSentErr = false, ""
	return SourceUpdate{Source: SourceHTTP, DaemonSets: s.set.daemonSets, ConfigMaps: s.set.configMaps, Secrets: s.set.secrets}, true
}

// failLocked records err and returns an error update unless the same error
// was the last thing sent.
func (s *HTTPSource) failLocked(err error) (SourceUpdate, bool) {
	s.report.Error = err.Error()
	if err.Error() == s.lastSentErr {
		return SourceUpdate{}, false
	}
	s.lastSentErr = err.Error()
	s.log.Error("manifest URL unusable; keeping its previous set", "err", err)
	return SourceUpdate{Source: SourceHTTP, Err: err}, true
}

// get makes one conditional GET; notModified reports a 304.
func (s *HTTPSource) get(ctx context.Context) (body []byte, notModified bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, false, fmt.Errorf("manifest URL %q: %w: %w", s.url, err, errdefs.ErrInvalidArgument)
	}
	req.Header = s.header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	s.mu.Lock()
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	s.mu.Unlock()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w: %w", s.url, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, true, nil
	case http.StatusOK:
	default:
		return nil, false, fmt.Errorf("GET %s: %s: %w", s.url, resp.Status, errdefs.ErrUnavailable)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxManifestBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: read body: %w: %w", s.url, err, errdefs.ErrUnavailable)
	}
	if len(body) > maxManifestBody {
		return nil, false, fmt.Errorf("GET %s: body larger than %d bytes: %w", s.url, maxManifestBody, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	s.etag = resp.Header.Get("ETag")
	s.mu.Unlock()
	return body, false, nil
}
