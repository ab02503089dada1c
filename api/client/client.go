// Package client is daemonlet's small typed client for its API server, which
// speaks Kubernetes' REST conventions: JSON bodies, metav1.Status errors,
// Warning headers and newline-delimited metav1.WatchEvent streams.
//
// A Client knows several servers. It talks to the one that last answered and,
// when a connection to it fails, moves on to the next in order, with a short
// jittered back-off between servers; it never retries a request that may have
// reached a server unless the request is a read.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/version"
)

// Config is what a Client needs to reach and authenticate to the servers.
type Config struct {
	// Servers are the base URLs of the API servers (https://host:port), tried
	// in order.
	Servers []string
	// Token is sent as "Authorization: Bearer <token>" when not empty.
	Token string
	// CAFile is a PEM bundle that verifies the servers' certificates instead
	// of the system roots.
	CAFile string
	// Timeout bounds every request except watches; 0 means no bound.
	Timeout time.Duration
	// UserAgent is sent in the User-Agent header when not empty.
	UserAgent string
	// WarningHandler receives the text of every Warning header the servers
	// send (for example fields daemonlet accepts but does not run); nil drops
	// them.
	WarningHandler func(string)
}

// Client is a connection to a set of daemonlet API servers; it is safe for
// concurrent use.
type Client struct {
	cfg     Config
	servers []*url.URL
	http    *http.Client

	mu      sync.Mutex
	current int // index into servers of the one that last answered; under mu
}

// failoverBackoff is the first pause before trying the next server; it
// doubles per server and gets up to 50% jitter, so that many agents whose
// server died do not all hit the next one at the same instant.
const failoverBackoff = 100 * time.Millisecond

// New checks cfg and builds a Client; it makes no request.
func New(cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("no API server given: %w", errdefs.ErrInvalidArgument)
	}
	c := &Client{cfg: cfg}
	for _, s := range cfg.Servers {
		u, err := url.Parse(strings.TrimRight(s, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server %q: want an http:// or https:// URL with a host: %w", s, errdefs.ErrInvalidArgument)
		}
		c.servers = append(c.servers, u)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading certificate authority: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certificate authority %s: no PEM certificate found: %w", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// No http.Client.Timeout: it would also cut watch streams; Timeout is
	// applied per request instead.
	c.http = &http.Client{Transport: transport}
	return c, nil
}

// ServerVersion returns the build information the server reports on /version.
func (c *Client) ServerVersion(ctx context.Context) (*version.Info, error) {
	var info version.Info
	if err := c.do(ctx, request{method: http.MethodGet, path: "/version"}, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	// gr and name describe the object for errors made up from a status code
	// when the server sent no Status body.
	gr   schema.GroupResource
	name string
}

// do performs req and decodes a 2xx JSON body into out (when not nil).
func (c *Client) do(ctx context.Context, req request, out any) error {
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w: %w", req.method, req.path, errdefs.ErrUnavailable, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding response: %w: %w", req.method, req.path, errdefs.ErrInvalidArgument, err)
	}
	return nil
}

// send performs req against the current server, failing over to the next
// ones on connection errors, and returns a 2xx response whose body the caller
// closes; any other status becomes an *apierrors.StatusError.
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	var body []byte
	if req.body != nil {
		var err error
		if body, err = json.Marshal(req.body); err != nil {
			return nil, fmt.Errorf("encoding request: %w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	c.mu.Lock()
	start := c.current
	c.mu.Unlock()
	var errs []error
	pause := failoverBackoff
	for i := range c.servers {
		if i > 0 {
			jittered := pause + time.Duration(rand.Int64N(int64(pause/2)+1))
			select {
			case <-ctx.Done():
				return nil, unavailable(req, append(errs, ctx.Err()))
			case <-time.After(jittered):
			}
			pause *= 2
		}
		idx := (start + i) % len(c.servers)
		resp, err := c.sendTo(ctx, c.servers[idx], req, body)
		if err == nil {
			c.mu.Lock()
			c.current = idx
			c.mu.Unlock()
			return c.checkResponse(resp, req)
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !retriable(req.method, err) {
			break
		}
	}
	return nil, unavailable(req, errs)
}

// unavailable reports that no server answered req, on one line, keeping
// every attempt's error reachable for errors.Is/As.
func unavailable(req request, errs []error) error {
	format := "%s %s: %w"
	args := []any{req.method, req.path, errdefs.ErrUnavailable}
	for i, err := range errs {
		if i == 0 {
			format += ": %w"
		} else {
			format += "; %w"
		}
		args = append(args, err)
	}
	return fmt.Errorf(format, args...)
}

// retriable says whether a failed request may be sent to another server:
// reads always, writes only when the connection was never made, so a write
// is never applied twice.
func retriable(method string, err error) bool {
	if method == http.MethodGet {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// sendTo sends one attempt of req to server.
func (c *Client) sendTo(ctx context.Context, server *url.URL, req request, body []byte) (*http.Response, error) {
	u := *server
	u.Path = server.Path + req.path
	u.RawQuery = req.query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	if c.cfg.UserAgent != "" {
		hreq.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	return c.http.Do(hreq)
}

// checkResponse hands the Warning headers to the handler and turns a non-2xx
// response into an *apierrors.StatusError, closing its body.
func (c *Client) checkResponse(resp *http.Response, req request) (*http.Response, error) {
	if c.cfg.WarningHandler != nil {
		// Malformed warnings are dropped, as client-go does.
		warnings, _ := utilnet.ParseWarningHeaders(resp.Header.Values("Warning"))
		for _, w := range warnings {
			c.cfg.WarningHandler(w.Text)
		}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return nil, statusError(resp.StatusCode, data, req)
}

// statusError decodes the metav1.Status of an error response or, when the
// body is not one, makes one up from the status code as client-go does.
func statusError(code int, body []byte, req request) error {
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err == nil && isStatus(&st) {
		if st.Code == 0 {
			st.Code = int32(code)
		}
		return &apierrors.StatusError{ErrStatus: st}
	}
	verb := strings.ToLower(req.method)
	if verb == "post" {
		verb = "create"
	} else if verb == "put" {
		verb = "update"
	}
	return apierrors.NewGenericServerResponse(code, verb, req.gr, req.name, strings.TrimSpace(string(body)), 0, true)
}

// isStatus says whether st was decoded from a metav1.Status; the kind is not
// required, because a Status built with apierrors and encoded as is has none.
func isStatus(st *metav1.Status) bool {
	return st.Kind == "Status" || st.Status == metav1.StatusFailure
}
