package api

import (
	"bytes"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxObjectSize is the largest total size, in bytes, of the values of one
// ConfigMap or Secret, the API server's limit (corev1.MaxSecretSize).
const MaxObjectSize = corev1.MaxSecretSize

// SetDefaultsConfigMap fills in what a manifest's ConfigMap may leave out:
// the namespace, "default" as for the other kinds.
func SetDefaultsConfigMap(cm *corev1.ConfigMap) {
	if cm.Namespace == "" {
		cm.Namespace = DefaultNamespace
	}
}

// SetDefaultsSecret defaults a Secret as the API server does: the type is
// Opaque when unset, and stringData is merged into data (stringData wins on a
// shared key) and cleared, since the API server never stores stringData. The
// namespace defaults to "default" as for the other kinds.
func SetDefaultsSecret(s *corev1.Secret) {
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	if len(s.StringData) > 0 {
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
	}
	s.StringData = nil
}

// ValidateConfigMap checks a ConfigMap as the API server does on create: a
// DNS-subdomain name, valid keys, disjoint data and binaryData keys, and at
// most MaxObjectSize bytes of values.
func ValidateConfigMap(cm *corev1.ConfigMap) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&cm.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	total := 0
	for k, v := range cm.Data {
		allErrs = append(allErrs, validateObjectKey(k, field.NewPath("data").Key(k))...)
		total += len(v)
	}
	for k, v := range cm.BinaryData {
		p := field.NewPath("binaryData").Key(k)
		allErrs = append(allErrs, validateObjectKey(k, p)...)
		if _, dup := cm.Data[k]; dup {
			allErrs = append(allErrs, field.Invalid(p, k, "duplicate of key present in data"))
		}
		total += len(v)
	}
	if total > MaxObjectSize {
		allErrs = append(allErrs, field.TooLong(field.NewPath("data"), "", MaxObjectSize))
	}
	return allErrs
}

// ValidateConfigMapUpdate checks newCM as ValidateConfigMap does and that the
// update keeps what the API server keeps: the name and namespace, and, when
// oldCM is immutable, its data, its binaryData and its immutability.
func ValidateConfigMapUpdate(newCM, oldCM *corev1.ConfigMap) field.ErrorList {
	allErrs := ValidateConfigMap(newCM)
	allErrs = append(allErrs, validateNameUnchanged(newCM.Name, oldCM.Name, newCM.Namespace, oldCM.Namespace)...)
	if isTrue(oldCM.Immutable) {
		allErrs = append(allErrs, validateImmutable(newCM.Immutable,
			maps.EqualFunc(newCM.Data, oldCM.Data, func(a, b string) bool { return a == b }),
			maps.EqualFunc(newCM.BinaryData, oldCM.BinaryData, bytes.Equal), "binaryData")...)
	}
	return allErrs
}

// ValidateSecret checks a (defaulted) Secret as the API server does on
// create: a DNS-subdomain name, valid keys, at most MaxObjectSize bytes of
// values, and the keys its well-known type requires.
func ValidateSecret(s *corev1.Secret) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&s.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	dataPath := field.NewPath("data")
	total := 0
	for k, v := range s.Data {
		allErrs = append(allErrs, validateObjectKey(k, dataPath.Key(k))...)
		total += len(v)
	}
	for k := range s.StringData {
		allErrs = append(allErrs, validateObjectKey(k, field.NewPath("stringData").Key(k))...)
	}
	if total > MaxObjectSize {
		allErrs = append(allErrs, field.TooLong(dataPath, "", MaxObjectSize))
	}
	typePath := field.NewPath("type")
	switch s.Type {
	case "":
		allErrs = append(allErrs, field.Required(typePath, ""))
	case corev1.SecretTypeDockerConfigJson:
		allErrs = append(allErrs, requireKeys(s.Data, dataPath, corev1.DockerConfigJsonKey)...)
	case corev1.SecretTypeDockercfg:
		allErrs = append(allErrs, requireKeys(s.Data, dataPath, corev1.DockerConfigKey)...)
	case corev1.SecretTypeTLS:
		allErrs = append(allErrs, requireKeys(s.Data, dataPath, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)...)
	case corev1.SecretTypeSSHAuth:
		allErrs = append(allErrs, requireKeys(s.Data, dataPath, corev1.SSHAuthPrivateKey)...)
	default:
		for _, msg := range validation.IsQualifiedName(string(s.Type)) {
			allErrs = append(allErrs, field.Invalid(typePath, s.Type, msg))
		}
	}
	return allErrs
}

// ValidateSecretUpdate checks newS as ValidateSecret does and that the update
// keeps the name, the namespace and the type, and, when oldS is immutable,
// its data and its immutability.
func ValidateSecretUpdate(newS, oldS *corev1.Secret) field.ErrorList {
	allErrs := ValidateSecret(newS)
	allErrs = append(allErrs, validateNameUnchanged(newS.Name, oldS.Name, newS.Namespace, oldS.Namespace)...)
	allErrs = append(allErrs, apimachineryvalidation.ValidateImmutableField(newS.Type, oldS.Type, field.NewPath("type"))...)
	if isTrue(oldS.Immutable) {
		allErrs = append(allErrs, validateImmutable(newS.Immutable, maps.EqualFunc(newS.Data, oldS.Data, bytes.Equal), true, "")...)
	}
	return allErrs
}

// ReferencedObjects returns the names, sorted and without duplicates, of the
// ConfigMaps and Secrets that spec uses through volumes (configMap, secret and
// projected sources), env valueFrom and envFrom, in every container, init
// container and ephemeral container: what a node needs to run the pod, and so
// all a node may read.
func ReferencedObjects(spec *corev1.PodSpec) (configMaps, secrets []string) {
	cms, secs := map[string]bool{}, map[string]bool{}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			cms[v.ConfigMap.Name] = true
		case v.Secret != nil:
			secs[v.Secret.SecretName] = true
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					cms[src.ConfigMap.Name] = true
				}
				if src.Secret != nil {
					secs[src.Secret.Name] = true
				}
			}
		}
	}
	visit := func(env []corev1.EnvVar, envFrom []corev1.EnvFromSource) {
		for _, e := range envFrom {
			if e.ConfigMapRef != nil {
				cms[e.ConfigMapRef.Name] = true
			}
			if e.SecretRef != nil {
				secs[e.SecretRef.Name] = true
			}
		}
		for _, e := range env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				cms[r.Name] = true
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				secs[r.Name] = true
			}
		}
	}
	for i := range spec.InitContainers {
		visit(spec.InitContainers[i].Env, spec.InitContainers[i].EnvFrom)
	}
	for i := range spec.Containers {
		visit(spec.Containers[i].Env, spec.Containers[i].EnvFrom)
	}
	for i := range spec.EphemeralContainers {
		visit(spec.EphemeralContainers[i].Env, spec.EphemeralContainers[i].EnvFrom)
	}
	// An empty name is a validation error elsewhere, not an object to read.
	delete(cms, "")
	delete(secs, "")
	return slices.Sorted(maps.Keys(cms)), slices.Sorted(maps.Keys(secs))
}

// validateObjectKey checks one data key as the API server does.
func validateObjectKey(k string, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(k) {
		allErrs = append(allErrs, field.Invalid(p, k, msg))
	}
	return allErrs
}

func validateNameUnchanged(newName, oldName, newNS, oldNS string) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateImmutableField(newName, oldName, field.NewPath("metadata", "name"))
	return append(allErrs, apimachineryvalidation.ValidateImmutableField(newNS, oldNS, field.NewPath("metadata", "namespace"))...)
}

// validateImmutable reports the changes an immutable object may not take:
// becoming mutable, or changed data (and binaryData, named by binaryField).
func validateImmutable(newImmutable *bool, sameData, sameBinary bool, binaryField string) field.ErrorList {
	var allErrs field.ErrorList
	if !isTrue(newImmutable) {
		allErrs = append(allErrs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if !sameData {
		allErrs = append(allErrs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	if !sameBinary {
		allErrs = append(allErrs, field.Forbidden(field.NewPath(binaryField), "field is immutable when `immutable` is set"))
	}
	return allErrs
}

func requireKeys(data map[string][]byte, p *field.Path, keys ...string) field.ErrorList {
	var allErrs field.ErrorList
	for _, k := range keys {
		if _, ok := data[k]; !ok {
			allErrs = append(allErrs, field.Required(p.Key(k), ""))
		}
	}
	return allErrs
}

func isTrue(b *bool) bool { return b != nil && *b }
