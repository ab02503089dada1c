package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

// newCreateCommand is kubectl create, for the ConfigMaps and Secrets that
// are awkward to write as manifests.
func newCreateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create (configmap|secret generic) NAME [--from-literal=KEY=VALUE] [--from-file=[KEY=]PATH]",
		Short: "Create a ConfigMap or a Secret from literals and files",
	}
	cmd.AddCommand(newCreateConfigMapCommand())
	secret := &cobra.Command{Use: "secret", Short: "Create a Secret"}
	secret.AddCommand(newCreateSecretGenericCommand())
	cmd.AddCommand(secret)
	return cmd
}

// createSources are the flags that fill a ConfigMap's or Secret's data.
type createSources struct {
	literals, files []string
	dryRun, output  string
}

func (s *createSources) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&s.literals, "from-literal", nil, "a key and literal value (key=value); repeatable")
	fl.StringArrayVar(&s.files, "from-file", nil, "a file ([key=]path; the key defaults to the file's name) or a directory, whose regular files each give a key; repeatable")
	fl.StringVar(&s.dryRun, "dry-run", dryRunNone, `"none", "client" (print, send nothing) or "server" (the server validates, stores nothing)`)
	fl.StringVarP(&s.output, "output", "o", "", "print the object as yaml, json or name instead of the result line")
}

// collect reads the literals and files into key/value pairs, refusing
// invalid and duplicated keys as kubectl does.
func (s *createSources) collect() (map[string][]byte, error) {
	switch s.output {
	case "", "yaml", "json", "name":
	default:
		return nil, fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,name,yaml: %w", s.output, errdefs.ErrInvalidArgument)
	}
	if s.dryRun != dryRunNone && s.dryRun != dryRunClient && s.dryRun != dryRunServer {
		return nil, fmt.Errorf(`invalid dry-run value (%s). Must be "none", "server", or "client": %w`, s.dryRun, errdefs.ErrInvalidArgument)
	}
	data := map[string][]byte{}
	put := func(key string, value []byte) error {
		if msgs := validation.IsConfigMapKey(key); len(msgs) > 0 {
			return fmt.Errorf("%q is not a valid key name: %s: %w", key, strings.Join(msgs, ";"), errdefs.ErrInvalidArgument)
		}
		if _, dup := data[key]; dup {
			return fmt.Errorf("cannot add key %q, another key by that name already exists: %w", key, errdefs.ErrInvalidArgument)
		}
		data[key] = value
		return nil
	}
	for _, lit := range s.literals {
		key, value, ok := strings.Cut(lit, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("invalid literal source %s, expected key=value: %w", lit, errdefs.ErrInvalidArgument)
		}
		if err := put(key, []byte(value)); err != nil {
			return nil, err
		}
	}
	for _, src := range s.files {
		key, path, named := strings.Cut(src, "=")
		if !named {
			key, path = "", src
		}
		if path == "" {
			return nil, fmt.Errorf("invalid file source %s, expected [key=]path: %w", src, errdefs.ErrInvalidArgument)
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("error reading %s: %w", path, errdefs.ErrNotFound)
		}
		if st.IsDir() {
			if named {
				return nil, fmt.Errorf("cannot give a key name for a directory path %s: %w", path, errdefs.ErrInvalidArgument)
			}
			entries, err := os.ReadDir(path)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if !e.Type().IsRegular() {
					continue // as kubectl: subdirectories, links and devices are skipped
				}
				value, err := os.ReadFile(filepath.Join(path, e.Name()))
				if err != nil {
					return nil, err
				}
				if err := put(e.Name(), value); err != nil {
					return nil, err
				}
			}
			continue
		}
		if key == "" {
			key = filepath.Base(path)
		}
		value, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if err := put(key, value); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// finish validates obj locally, creates it unless the dry run is the
// client's, and prints kubectl's result line or the object.
func (s *createSources) finish(cmd *cobra.Command, kind kindInfo, obj runtime.Object, name string, create func(ctx context.Context, opts client.WriteOptions) (runtime.Object, error)) error {
	out := cmd.OutOrStdout()
	if s.dryRun != dryRunClient {
		created, err := create(cmd.Context(), client.WriteOptions{DryRun: s.dryRun == dryRunServer})
		if err != nil {
			return err
		}
		obj = created
	}
	if s.output != "" {
		return printObjects(out, s.output, kind, []runtime.Object{obj}, true)
	}
	suffix := ""
	switch s.dryRun {
	case dryRunClient:
		suffix = " (dry run)"
	case dryRunServer:
		suffix = " (server dry run)"
	}
	fmt.Fprintf(out, "%s created%s\n", strings.ToLower(kind.gvk.Kind)+"/"+name, suffix)
	return nil
}

func newCreateConfigMapCommand() *cobra.Command {
	var src createSources
	cmd := &cobra.Command{
		Use:     "configmap NAME [--from-literal=KEY=VALUE] [--from-file=[KEY=]PATH]",
		Aliases: []string{"cm"},
		Short:   "Create a ConfigMap from literals, files and directories",
		Args:    cobra.ExactArgs(1),
	}
	flags := addClientFlags(cmd)
	src.add(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := src.collect()
		if err != nil {
			return err
		}
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: args[0], Namespace: flags.namespace},
		}
		// Text goes to data, anything else to binaryData, as kubectl does.
		for k, v := range data {
			if utf8.Valid(v) {
				if cm.Data == nil {
					cm.Data = map[string]string{}
				}
				cm.Data[k] = string(v)
			} else {
				if cm.BinaryData == nil {
					cm.BinaryData = map[string][]byte{}
				}
				cm.BinaryData[k] = v
			}
		}
		if errs := api.ValidateConfigMap(cm); len(errs) > 0 {
			return fmt.Errorf("configmap %q is invalid: %v: %w", cm.Name, errs.ToAggregate(), errdefs.ErrInvalidArgument)
		}
		return src.finish(cmd, kindConfigMap, cm, cm.Name, func(ctx context.Context, opts client.WriteOptions) (runtime.Object, error) {
			c, err := flags.client(cmd)
			if err != nil {
				return nil, err
			}
			return c.ConfigMaps(cm.Namespace).Create(ctx, cm, opts)
		})
	}
	return cmd
}

func newCreateSecretGenericCommand() *cobra.Command {
	var src createSources
	var secretType string
	cmd := &cobra.Command{
		Use:   "generic NAME [--type=string] [--from-literal=KEY=VALUE] [--from-file=[KEY=]PATH]",
		Short: "Create a Secret from literals, files and directories",
		Args:  cobra.ExactArgs(1),
	}
	flags := addClientFlags(cmd)
	src.add(cmd)
	cmd.Flags().StringVar(&secretType, "type", "", "the Secret's type (default Opaque)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := src.collect()
		if err != nil {
			return err
		}
		secret := &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: args[0], Namespace: flags.namespace},
			Type:       corev1.SecretType(secretType),
			Data:       data,
		}
		api.SetDefaultsSecret(secret)
		if errs := api.ValidateSecret(secret); len(errs) > 0 {
			return fmt.Errorf("secret %q is invalid: %v: %w", secret.Name, errs.ToAggregate(), errdefs.ErrInvalidArgument)
		}
		return src.finish(cmd, kindSecret, secret, secret.Name, func(ctx context.Context, opts client.WriteOptions) (runtime.Object, error) {
			c, err := flags.client(cmd)
			if err != nil {
				return nil, err
			}
			return c.Secrets(secret.Namespace).Create(ctx, secret, opts)
		})
	}
	return cmd
}
