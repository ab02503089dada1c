package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Paths served on the healthz address.
const (
	PathHealthz = "/healthz"
	PathPods    = "/pods"
	PathSources = "/sources"
)

// StatusProvider is what the status endpoint reads from the agent; *Agent
// implements it.
type StatusProvider interface {
	// Healthy returns nil while the agent works, else why not.
	Healthy() error
	// Pods returns the status of every pod.
	Pods() []PodStatus
	// Sources returns the agent's view of every configured source.
	Sources() []SourceStatus
}

var _ StatusProvider = (*Agent)(nil)

// SourceInfo is one entry of /sources: the agent's view of a source (did it
// deliver, how many DaemonSets, name conflicts) joined with the source's
// own report (last read, per-file errors).
type SourceInfo struct {
	SourceReport
	// Synced says the source delivered a full set since the agent started.
	Synced bool `json:"synced"`
	// DaemonSets is how many DaemonSets of the source the agent holds.
	DaemonSets int `json:"daemonSets"`
	// AgentError is the agent's last error for the source: a failed read
	// it was told of, or a set it could not persist.
	AgentError string `json:"agentError,omitempty"`
	// Conflicts lists the source's DaemonSets that another source defines.
	Conflicts []string `json:"conflicts,omitempty"`
}

// NewStatusHandler serves /healthz (200 "ok" while the agent is healthy,
// else 500 with the reason), /pods (the pods as JSON) and /sources (the
// sources as JSON) for the given agent and sources.
func NewStatusHandler(a StatusProvider, sources []Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := a.Healthy(); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+PathPods, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.Pods())
	})
	mux.HandleFunc("GET "+PathSources, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, sourceInfos(a.Sources(), sources))
	})
	return mux
}

// sourceInfos joins the agent's and the sources' views by source name.
func sourceInfos(agentView []SourceStatus, sources []Source) []SourceInfo {
	reports := map[string]SourceReport{}
	for _, s := range sources {
		reports[s.Name()] = s.Report()
	}
	out := make([]SourceInfo, 0, len(agentView))
	for _, st := range agentView {
		info := SourceInfo{SourceReport: reports[st.Name], Synced: st.Synced, DaemonSets: st.DaemonSets, Conflicts: st.Conflicts}
		info.Name = st.Name
		if st.Err != nil {
			info.AgentError = st.Err.Error()
		}
		out = append(out, info)
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// An error here is a client gone away; there is no one to tell.
	_ = enc.Encode(v)
}

// statusClientTimeout bounds `daemonlet agent status`'s request.
const statusClientTimeout = 10 * time.Second

// FetchPods reads /pods from the agent at address, "host:port" or a URL.
func FetchPods(ctx context.Context, address string) ([]PodStatus, error) {
	base := address
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("agent address %q: expected host:port or a URL: %w", address, errdefs.ErrInvalidArgument)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + PathPods
	ctx, cancel := context.WithTimeout(ctx, statusClientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("agent address %q: %w: %w", address, err, errdefs.ErrInvalidArgument)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no agent answers at %s (is `daemonlet agent` running, with this --healthz-port?): %w", u.Host, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("GET %s: %w: %w", u, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("GET %s: %s: %s: %w", u, resp.Status, strings.TrimSpace(string(body)), errdefs.ErrUnavailable)
	}
	var pods []PodStatus
	if err := json.NewDecoder(resp.Body).Decode(&pods); err != nil {
		return nil, fmt.Errorf("GET %s: decode pods: %w: %w", u, err, errdefs.ErrUnavailable)
	}
	return pods, nil
}

// Output formats of PrintPods, as kubectl's -o.
const (
	OutputTable = ""
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// PrintPods writes pods as kubectl would: a table (NAME, DAEMONSET, PHASE,
// READY, RESTARTS, AGE, REVISION, REASON; wide adds the namespace first and
// the worker state, source and UID last), or JSON or YAML. Ages are
// measured at now.
func PrintPods(w io.Writer, pods []PodStatus, output string, now time.Time) error {
	switch output {
	case OutputJSON:
		b, err := json.MarshalIndent(pods, "", "    ")
		if err != nil {
			return fmt.Errorf("encode pods: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case OutputYAML:
		b, err := yaml.Marshal(pods)
		if err != nil {
			return fmt.Errorf("encode pods: %w", err)
		}
		_, err = w.Write(b)
		return err
	case OutputTable, OutputWide:
	default:
		return fmt.Errorf("output format %q: expected json, yaml or wide: %w", output, errdefs.ErrInvalidArgument)
	}
	wide := output == OutputWide
	// kubectl's table layout: columns padded by three spaces.
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	header := []string{"NAME", "DAEMONSET", "PHASE", "READY", "RESTARTS", "AGE", "REVISION", "REASON"}
	if wide {
		header = append(append([]string{"NAMESPACE"}, header...), "STATE", "SOURCE", "UID")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, p := range pods {
		row := []string{
			p.Name,
			p.DaemonSet,
			orNone(string(p.Phase)),
			fmt.Sprintf("%d/%d", p.Ready, p.Total),
			strconv.Itoa(p.Restarts),
			age(p.StartTime, now),
			orNone(p.Revision),
			orNone(p.Reason),
		}
		if wide {
			row = append(append([]string{p.Namespace}, row...), orNone(p.State), orNone(p.Source), p.UID)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// age is kubectl's AGE column: 5s, 3m, 2d4h, ...; <unknown> without a time.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// orNone is kubectl's rendering of an empty cell.
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
