package api

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzDecodeAndValidate feeds arbitrary bytes to the manifest decoder. It
// must never panic; every error must be an InvalidArgument that names the
// source file; every object it accepts must be a defaulted, valid
// DaemonSet or Pod that survives a second validation.
func FuzzDecodeAndValidate(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*")
	seeds = append(seeds, "../deploy/examples/fluentd-elasticsearch.yaml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("{}"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := DecodeAndValidate("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error not classed InvalidArgument: %v", err)
			}
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, o := range objs {
			switch {
			case o.DaemonSet != nil:
				if errs := ValidateDaemonSet(o.DaemonSet); len(errs) != 0 {
					t.Fatalf("accepted an invalid DaemonSet: %v", errs)
				}
			case o.Pod != nil:
				if errs := ValidatePod(o.Pod); len(errs) != 0 {
					t.Fatalf("accepted an invalid Pod: %v", errs)
				}
			case o.ConfigMap != nil:
				if errs := ValidateConfigMap(o.ConfigMap); len(errs) != 0 {
					t.Fatalf("accepted an invalid ConfigMap: %v", errs)
				}
			case o.Secret != nil:
				if errs := ValidateSecret(o.Secret); len(errs) != 0 {
					t.Fatalf("accepted an invalid Secret: %v", errs)
				}
			default:
				t.Fatalf("document %d decoded to nothing", o.Doc)
			}
		}
	})
}

// FuzzParseNodeLabels checks that --node-labels never panics and that
// what it accepts round-trips through its own syntax.
func FuzzParseNodeLabels(f *testing.F) {
	for _, s := range []string{"", "a=b", "a=b,c=d", "example.com/x=y", "a", "=b", "a=b=c", "a=,b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		labels, err := ParseNodeLabels(s)
		if err != nil {
			return
		}
		var parts []string
		for k, v := range labels {
			parts = append(parts, k+"="+v)
		}
		again, err := ParseNodeLabels(strings.Join(parts, ","))
		if err != nil || len(again) != len(labels) {
			t.Fatalf("%q parsed to %v, which does not round-trip: %v %v", s, labels, again, err)
		}
	})
}

// FuzzParseTaints checks that --register-with-taints never panics and
// that every taint it accepts has a valid effect and round-trips.
func FuzzParseTaints(f *testing.F) {
	for _, s := range []string{"a=b:NoSchedule", "a:NoExecute", "a=b:PreferNoSchedule,c:NoSchedule", "a=b", ":NoSchedule", "a=b:Bad"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		taints, err := ParseTaints([]string{s})
		if err != nil {
			return
		}
		var parts []string
		for _, tn := range taints {
			switch tn.Effect {
			case "NoSchedule", "PreferNoSchedule", "NoExecute":
			default:
				t.Fatalf("%q accepted effect %q", s, tn.Effect)
			}
			p := tn.Key
			if tn.Value != "" {
				p += "=" + tn.Value
			}
			parts = append(parts, p+":"+string(tn.Effect))
		}
		again, err := ParseTaints([]string{strings.Join(parts, ",")})
		if err != nil || len(again) != len(taints) {
			t.Fatalf("%q parsed to %v, which does not round-trip: %v %v", s, taints, again, err)
		}
	})
}
