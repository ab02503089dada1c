// Package bench holds daemonlet's benchmark harness (`make bench`): each
// figure is measured next to its reference in the same run, recorded as
// one JSON file, and bench/report gathers them into bench/results.json and
// a markdown table.
//
// The figures are TestBench* functions. Under `make test` they run as a
// seconds-long smoke of the harness (Full is false: small sizes, few
// repetitions); `make bench` sets DAEMONLET_BENCH=1 for the real sizes.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Figure is one measured result and the reference it is held against.
type Figure struct {
	// Name identifies the figure, e.g. "pod-start-file-p50".
	Name string `json:"name"`
	// Value is the measurement in Unit.
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Reference is what Value is compared with, measured in the same run
	// (the raw containerd client, the theoretical minimum, ...), in Unit;
	// zero when the figure has only a target.
	Reference     float64 `json:"reference"`
	ReferenceName string  `json:"reference_name,omitempty"`
	// Ratio is Value / Reference (0 without a reference).
	Ratio float64 `json:"ratio"`
	// Target is the goal as text, e.g. "ratio <= 1.3" or "< 1 s".
	Target string `json:"target"`
	// Met tells whether the target was met.
	Met bool `json:"met"`
	// Conditions say how it was measured: sizes, repetitions, machine.
	Conditions string `json:"conditions"`
}

// Full tells whether the real benchmark sizes are wanted (make bench)
// rather than the smoke run of make test.
func Full() bool { return os.Getenv("DAEMONLET_BENCH") == "1" }

// Pick returns full under make bench and smoke otherwise.
func Pick[T any](full, smoke T) T {
	if Full() {
		return full
	}
	return smoke
}

// Record writes the figure to $DAEMONLET_BENCH_OUT/<name>.json (nowhere
// when unset, as in make test) and logs it.
func Record(t testing.TB, f Figure) {
	t.Helper()
	if f.Reference != 0 && f.Ratio == 0 {
		f.Ratio = f.Value / f.Reference
	}
	t.Logf("figure %s: %.4g %s (reference %.4g, ratio %.3g, target %s, met %v; %s)",
		f.Name, f.Value, f.Unit, f.Reference, f.Ratio, f.Target, f.Met, f.Conditions)
	dir := os.Getenv("DAEMONLET_BENCH_OUT")
	if dir == "" {
		return
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, f.Name+".json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Quantile is the q-quantile (0..1) of xs by the nearest-rank method; xs
// need not be sorted.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Seconds converts durations to seconds for Quantile.
func Seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// Load reads every figure recorded in dir, sorted by name.
func Load(dir string) ([]Figure, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Figure
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var f Figure
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Figure) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Table renders figures as a markdown table.
func Table(figs []Figure) string {
	var b strings.Builder
	b.WriteString("| figure | value | reference | ratio | target | met | conditions |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, f := range figs {
		ref, ratio := "", ""
		if f.Reference != 0 {
			ref = fmt.Sprintf("%.4g %s (%s)", f.Reference, f.Unit, f.ReferenceName)
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		met := "yes"
		if !f.Met {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %.4g %s | %s | %s | %s | %s | %s |\n", f.Name, f.Value, f.Unit, ref, ratio, f.Target, met, f.Conditions)
	}
	return b.String()
}
