package server

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	sigsyaml "sigs.k8s.io/yaml"
)

// aesgcmPrefix starts every value the aesgcm provider writes, followed by
// the key's name and a colon, as kube-apiserver writes them, so that a store
// written by one can be read by the other's configuration.
const aesgcmPrefix = "k8s:enc:aesgcm:v1:"

// encryptableResources are the resources whose values may be encrypted at
// rest; the others are written by code paths that do not transform values.
var encryptableResources = map[string]bool{"secrets": true, "configmaps": true}

// encryptionConfiguration is kube-apiserver's EncryptionConfiguration
// (apiserver.config.k8s.io/v1), as far as daemonlet supports it.
type encryptionConfiguration struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Resources  []struct {
		Resources []string             `json:"resources"`
		Providers []providerConfigYAML `json:"providers"`
	} `json:"resources"`
}

type providerConfigYAML struct {
	AESGCM *struct {
		Keys []struct {
			Name   string `json:"name"`
			Secret string `json:"secret"`
		} `json:"keys"`
	} `json:"aesgcm,omitempty"`
	Identity *struct{} `json:"identity,omitempty"`
}

// Encryption holds, per resource, the providers that encrypt values before
// they are stored and decrypt them when read (kube-apiserver's encryption at
// rest). The zero value (or nil) stores everything in plain.
type Encryption struct {
	byResource map[string]*transformer
}

// transformer is one resource's provider chain: the first key (or identity)
// writes, every configured key (and identity, when listed) reads.
type transformer struct {
	// write is the key new values are sealed with; nil writes plain.
	write *namedKey
	// keys are the aesgcm keys that can read, by name.
	keys map[string]*namedKey
	// readPlain says whether unprefixed values are accepted (identity is
	// one of the providers).
	readPlain bool
}

type namedKey struct {
	name string
	aead cipher.AEAD
}

// LoadEncryptionConfig reads an EncryptionConfiguration file (see
// ParseEncryptionConfig).
func LoadEncryptionConfig(path string) (*Encryption, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption provider config: %w", err)
	}
	enc, err := ParseEncryptionConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return enc, nil
}

// ParseEncryptionConfig parses kube-apiserver's EncryptionConfiguration
// YAML (apiVersion apiserver.config.k8s.io/v1): for secrets (and
// configmaps), a list of aesgcm and identity providers, the first of which
// encrypts and all of which decrypt. aesgcm keys are base64 of 16, 24 or 32
// bytes. Other providers and resources are refused rather than silently
// leaving data in plain.
func ParseEncryptionConfig(data []byte) (*Encryption, error) {
	var cfg encryptionConfiguration
	if err := sigsyaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("parsing the encryption configuration: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if cfg.APIVersion != "apiserver.config.k8s.io/v1" || cfg.Kind != "EncryptionConfiguration" {
		return nil, fmt.Errorf("want apiVersion apiserver.config.k8s.io/v1, kind EncryptionConfiguration, found %q, %q: %w",
			cfg.APIVersion, cfg.Kind, errdefs.ErrInvalidArgument)
	}
	enc := &Encryption{byResource: map[string]*transformer{}}
	for i, rc := range cfg.Resources {
		if len(rc.Providers) == 0 {
			return nil, fmt.Errorf("resources[%d].providers: at least one provider is required: %w", i, errdefs.ErrInvalidArgument)
		}
		t := &transformer{keys: map[string]*namedKey{}}
		for j, p := range rc.Providers {
			where := fmt.Sprintf("resources[%d].providers[%d]", i, j)
			switch {
			case p.AESGCM != nil && p.Identity != nil:
				return nil, fmt.Errorf("%s: one provider per list item: %w", where, errdefs.ErrInvalidArgument)
			case p.Identity != nil:
				t.readPlain = true
			case p.AESGCM != nil:
				if len(p.AESGCM.Keys) == 0 {
					return nil, fmt.Errorf("%s.aesgcm.keys: at least one key is required: %w", where, errdefs.ErrInvalidArgument)
				}
				for k, key := range p.AESGCM.Keys {
					nk, err := newNamedKey(key.Name, key.Secret)
					if err != nil {
						return nil, fmt.Errorf("%s.aesgcm.keys[%d]: %w", where, k, err)
					}
					if _, dup := t.keys[nk.name]; dup {
						return nil, fmt.Errorf("%s.aesgcm.keys[%d]: duplicate key name %q: %w", where, k, nk.name, errdefs.ErrInvalidArgument)
					}
					t.keys[nk.name] = nk
					if j == 0 && k == 0 {
						t.write = nk
					}
				}
			default:
				return nil, fmt.Errorf("%s: unsupported provider: daemonlet supports aesgcm and identity: %w", where, errdefs.ErrInvalidArgument)
			}
		}
		for _, name := range rc.Resources {
			name = strings.TrimSuffix(name, ".") // "secrets." is the core group's spelling
			if !encryptableResources[name] {
				return nil, fmt.Errorf("resources[%d].resources: %q cannot be encrypted: daemonlet encrypts secrets and configmaps: %w", i, name, errdefs.ErrInvalidArgument)
			}
			if _, dup := enc.byResource[name]; dup {
				return nil, fmt.Errorf("resources[%d].resources: %q is configured twice: %w", i, name, errdefs.ErrInvalidArgument)
			}
			enc.byResource[name] = t
		}
	}
	return enc, nil
}

func newNamedKey(name, secret string) (*namedKey, error) {
	if name == "" || strings.Contains(name, ":") {
		return nil, fmt.Errorf("name %q: must be non-empty and without ':': %w", name, errdefs.ErrInvalidArgument)
	}
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return nil, fmt.Errorf("key %q: secret is not base64: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("key %q: want 16, 24 or 32 bytes, found %d: %w", name, len(raw), errdefs.ErrInvalidArgument)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", name, err)
	}
	return &namedKey{name: name, aead: aead}, nil
}

// Encrypts says whether values of the resource (e.g. "secrets") are written
// encrypted, for the server's start-up warning.
func (e *Encryption) Encrypts(resource string) bool {
	if e == nil {
		return false
	}
	t := e.byResource[resource]
	return t != nil && t.write != nil
}

// forResource is the transformer of a resource; nil stores plain.
func (e *Encryption) forResource(resource string) *transformer {
	if e == nil {
		return nil
	}
	return e.byResource[resource]
}

// seal encrypts a value about to be stored under key. The key is the
// authenticated data, so that a value copied under another key does not
// decrypt.
func (t *transformer) seal(key string, plain []byte) ([]byte, error) {
	if t == nil || t.write == nil {
		return plain, nil
	}
	nonce := make([]byte, t.write.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypting %s: %w", key, err)
	}
	out := []byte(aesgcmPrefix + t.write.name + ":")
	out = append(out, nonce...)
	return t.write.aead.Seal(out, nonce, plain, []byte(key)), nil
}

// unseal decrypts a stored value with whichever configured key wrote it.
func (t *transformer) unseal(key string, stored []byte) ([]byte, error) {
	rest, encrypted := bytes.CutPrefix(stored, []byte(aesgcmPrefix))
	if !encrypted {
		if t == nil || t.readPlain {
			return stored, nil
		}
		return nil, fmt.Errorf("decrypting %s: the value is not encrypted and identity is not among the providers: %w", key, errdefs.ErrFailedPrecondition)
	}
	name, sealed, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return nil, fmt.Errorf("decrypting %s: malformed encrypted value: %w", key, errdefs.ErrFailedPrecondition)
	}
	var nk *namedKey
	if t != nil {
		nk = t.keys[string(name)]
	}
	if nk == nil {
		return nil, fmt.Errorf("decrypting %s: key %q is not configured: %w", key, name, errdefs.ErrFailedPrecondition)
	}
	ns := nk.aead.NonceSize()
	if len(sealed) < ns {
		return nil, fmt.Errorf("decrypting %s: value too short: %w", key, errdefs.ErrFailedPrecondition)
	}
	plain, err := nk.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(key))
	if err != nil {
		return nil, fmt.Errorf("decrypting %s with key %q: %v: %w", key, name, err, errdefs.ErrFailedPrecondition)
	}
	return plain, nil
}
