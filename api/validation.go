package api

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"reflect"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// ValidateDaemonSet checks a (defaulted) DaemonSet as the API server does on
// create (K8S-SEMANTICS.md §3).
func ValidateDaemonSet(ds *appsv1.DaemonSet) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&ds.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	allErrs = append(allErrs, validateRolloutAnnotations(&ds.ObjectMeta, field.NewPath("metadata"))...)
	return append(allErrs, validateDaemonSetSpec(&ds.Spec, field.NewPath("spec"))...)
}

// ValidateDaemonSetUpdate checks newDS as ValidateDaemonSet does and that it
// changes nothing the API server keeps immutable: the selector (apps/v1),
// the name and the namespace.
func ValidateDaemonSetUpdate(newDS, oldDS *appsv1.DaemonSet) field.ErrorList {
	allErrs := ValidateDaemonSet(newDS)
	allErrs = append(allErrs, apimachineryvalidation.ValidateImmutableField(newDS.Name, oldDS.Name, field.NewPath("metadata", "name"))...)
	allErrs = append(allErrs, apimachineryvalidation.ValidateImmutableField(newDS.Namespace, oldDS.Namespace, field.NewPath("metadata", "namespace"))...)
	allErrs = append(allErrs, apimachineryvalidation.ValidateImmutableField(newDS.Spec.Selector, oldDS.Spec.Selector, field.NewPath("spec", "selector"))...)
	return allErrs
}

// ValidatePod checks a (defaulted) static Pod as the API server checks a Pod.
func ValidatePod(pod *corev1.Pod) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&pod.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	specPath := field.NewPath("spec")
	allErrs = append(allErrs, validatePodSpec(&pod.Spec, specPath)...)
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	case "":
		allErrs = append(allErrs, field.Required(specPath.Child("restartPolicy"), ""))
	default:
		allErrs = append(allErrs, field.NotSupported(specPath.Child("restartPolicy"), pod.Spec.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}))
	}
	if ads := pod.Spec.ActiveDeadlineSeconds; ads != nil && *ads < 1 {
		allErrs = append(allErrs, field.Invalid(specPath.Child("activeDeadlineSeconds"), *ads, "must be greater than or equal to 1"))
	}
	return allErrs
}

func validateDaemonSetSpec(spec *appsv1.DaemonSetSpec, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	selPath := p.Child("selector")
	sel := spec.Selector
	switch {
	case sel == nil:
		allErrs = append(allErrs, field.Required(selPath, ""))
	case len(sel.MatchLabels)+len(sel.MatchExpressions) == 0:
		allErrs = append(allErrs, field.Invalid(selPath, sel, "empty selector is invalid for daemonset"))
	default:
		allErrs = append(allErrs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, selPath)...)
		selector, err := metav1.LabelSelectorAsSelector(sel)
		if err == nil && !selector.Matches(labels.Set(spec.Template.Labels)) {
			allErrs = append(allErrs, field.Invalid(p.Child("template", "metadata", "labels"), spec.Template.Labels, "`selector` does not match template `labels`"))
		}
	}

	tmplPath := p.Child("template")
	allErrs = append(allErrs, metav1validation.ValidateLabels(spec.Template.Labels, tmplPath.Child("metadata", "labels"))...)
	allErrs = append(allErrs, apimachineryvalidation.ValidateAnnotations(spec.Template.Annotations, tmplPath.Child("metadata", "annotations"))...)
	podPath := tmplPath.Child("spec")
	allErrs = append(allErrs, validatePodSpec(&spec.Template.Spec, podPath)...)
	if rp := spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyAlways {
		allErrs = append(allErrs, field.NotSupported(podPath.Child("restartPolicy"), rp, []corev1.RestartPolicy{corev1.RestartPolicyAlways}))
	}
	if spec.Template.Spec.ActiveDeadlineSeconds != nil {
		allErrs = append(allErrs, field.Forbidden(podPath.Child("activeDeadlineSeconds"), "activeDeadlineSeconds in DaemonSet is not Supported"))
	}

	allErrs = append(allErrs, apimachineryvalidation.ValidateNonnegativeField(int64(spec.MinReadySeconds), p.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		allErrs = append(allErrs, apimachineryvalidation.ValidateNonnegativeField(int64(*spec.RevisionHistoryLimit), p.Child("revisionHistoryLimit"))...)
	}
	return append(allErrs, validateUpdateStrategy(&spec.UpdateStrategy, p.Child("updateStrategy"))...)
}

func validateUpdateStrategy(us *appsv1.DaemonSetUpdateStrategy, p *field.Path) field.ErrorList {
	switch us.Type {
	case appsv1.OnDeleteDaemonSetStrategyType:
		return nil // a rollingUpdate block is accepted and ignored
	case appsv1.RollingUpdateDaemonSetStrategyType:
		if us.RollingUpdate == nil {
			return field.ErrorList{field.Required(p.Child("rollingUpdate"), "")}
		}
		return validateRollingUpdate(us.RollingUpdate, p.Child("rollingUpdate"))
	default:
		return field.ErrorList{field.NotSupported(p.Child("type"), us.Type,
			[]appsv1.DaemonSetUpdateStrategyType{appsv1.RollingUpdateDaemonSetStrategyType, appsv1.OnDeleteDaemonSetStrategyType})}
	}
}

func validateRollingUpdate(ru *appsv1.RollingUpdateDaemonSet, p *field.Path) field.ErrorList {
	unavailPath, surgePath := p.Child("maxUnavailable"), p.Child("maxSurge")
	allErrs := validateIntOrPercent(ru.MaxUnavailable, unavailPath)
	allErrs = append(allErrs, validateIntOrPercent(ru.MaxSurge, surgePath)...)
	if len(allErrs) > 0 {
		return allErrs
	}
	unavail, surge := isNonZero(ru.MaxUnavailable), isNonZero(ru.MaxSurge)
	switch {
	case !unavail && !surge:
		allErrs = append(allErrs, field.Required(unavailPath, "cannot be 0 when maxSurge is 0"))
	case unavail && surge:
		allErrs = append(allErrs, field.Invalid(surgePath, ru.MaxSurge.String(), "may not be set when maxUnavailable is non-zero"))
	}
	return allErrs
}

// validateIntOrPercent accepts a non-negative integer or a "N%" string with
// N <= 100; nil stands for zero.
func validateIntOrPercent(v *intstr.IntOrString, p *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.String {
		if msgs := validation.IsValidPercent(v.StrVal); len(msgs) > 0 {
			return field.ErrorList{field.Invalid(p, v.StrVal, strings.Join(msgs, "; "))}
		}
		if n, _ := strconv.Atoi(strings.TrimSuffix(v.StrVal, "%")); n > 100 {
			return field.ErrorList{field.Invalid(p, v.StrVal, "must not be greater than 100%")}
		}
		return nil
	}
	return apimachineryvalidation.ValidateNonnegativeField(int64(v.IntVal), p)
}

func isNonZero(v *intstr.IntOrString) bool {
	if v == nil {
		return false
	}
	if v.Type == intstr.String {
		return strings.TrimLeft(strings.TrimSuffix(v.StrVal, "%"), "0") != ""
	}
	return v.IntVal != 0
}

// validatePodSpec checks what the API server checks in any pod spec; the
// restart policy and active deadline are left to the callers, whose rules
// differ.
func validatePodSpec(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	volumes, allErrs := validateVolumes(spec.Volumes, p.Child("volumes"))
	if len(spec.Containers) == 0 {
		allErrs = append(allErrs, field.Required(p.Child("containers"), "must have at least one container"))
	}
	cv := containerValidator{volumes: volumes, names: map[string]bool{}, hostPorts: map[string]bool{}, hostNetwork: spec.HostNetwork}
	for i := range spec.InitContainers {
		allErrs = append(allErrs, cv.validate(&spec.InitContainers[i], p.Child("initContainers").Index(i), true)...)
	}
	for i := range spec.Containers {
		allErrs = append(allErrs, cv.validate(&spec.Containers[i], p.Child("containers").Index(i), false)...)
	}
	allErrs = append(allErrs, validateDNS(spec, p)...)
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		allErrs = append(allErrs, apimachineryvalidation.ValidateNonnegativeField(*g, p.Child("terminationGracePeriodSeconds"))...)
	}
	allErrs = append(allErrs, metav1validation.ValidateLabels(spec.NodeSelector, p.Child("nodeSelector"))...)
	allErrs = append(allErrs, validateDNSNames(spec, p)...)
	for i := range spec.Tolerations {
		allErrs = append(allErrs, validateToleration(&spec.Tolerations[i], p.Child("tolerations").Index(i))...)
	}
	if spec.Affinity != nil && spec.Affinity.NodeAffinity != nil {
		allErrs = append(allErrs, validateNodeAffinity(spec.Affinity.NodeAffinity, p.Child("affinity", "nodeAffinity"))...)
	}
	return allErrs
}

// validateDNSNames checks the pod spec fields that hold DNS names.
func validateDNSNames(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, f := range []struct {
		name, value string
		check       func(string) []string
	}{
		{"nodeName", spec.NodeName, validation.IsDNS1123Subdomain},
		{"hostname", spec.Hostname, validation.IsDNS1123Label},
		{"subdomain", spec.Subdomain, validation.IsDNS1123Label},
		{"serviceAccountName", spec.ServiceAccountName, validation.IsDNS1123Subdomain},
	} {
		if f.value == "" {
			continue
		}
		for _, msg := range f.check(f.value) {
			allErrs = append(allErrs, field.Invalid(p.Child(f.name), f.value, msg))
		}
	}
	return allErrs
}

func validateDNS(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	policyPath, configPath := p.Child("dnsPolicy"), p.Child("dnsConfig")
	switch spec.DNSPolicy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault:
	case corev1.DNSNone:
		if spec.DNSConfig == nil {
			return field.ErrorList{field.Required(configPath, "must provide `dnsConfig` when `dnsPolicy` is None")}
		}
		if len(spec.DNSConfig.Nameservers) == 0 {
			allErrs = append(allErrs, field.Required(configPath.Child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None"))
		}
	case "":
		allErrs = append(allErrs, field.Required(policyPath, ""))
	default:
		allErrs = append(allErrs, field.NotSupported(policyPath, spec.DNSPolicy,
			[]corev1.DNSPolicy{corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone}))
	}
	if spec.DNSConfig == nil {
		return allErrs
	}
	if n := len(spec.DNSConfig.Nameservers); n > 3 {
		allErrs = append(allErrs, field.Invalid(configPath.Child("nameservers"), spec.DNSConfig.Nameservers, "must not have more than 3 nameservers"))
	}
	for i, ns := range spec.DNSConfig.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			allErrs = append(allErrs, field.Invalid(configPath.Child("nameservers").Index(i), ns, "must be a valid IP address"))
		}
	}
	if n := len(spec.DNSConfig.Searches); n > 32 {
		allErrs = append(allErrs, field.Invalid(configPath.Child("searches"), spec.DNSConfig.Searches, "must not have more than 32 search paths"))
	}
	for i, s := range spec.DNSConfig.Searches {
		for _, msg := range validation.IsDNS1123Subdomain(strings.TrimSuffix(s, ".")) {
			allErrs = append(allErrs, field.Invalid(configPath.Child("searches").Index(i), s, msg))
		}
	}
	return allErrs
}

func validateToleration(t *corev1.Toleration, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if t.Key != "" {
		allErrs = append(allErrs, metav1validation.ValidateLabelName(t.Key, p.Child("key"))...)
	}
	if t.Key == "" && t.Operator != corev1.TolerationOpExists {
		allErrs = append(allErrs, field.Invalid(p.Child("operator"), t.Operator,
			"operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
	}
	if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
		allErrs = append(allErrs, field.Invalid(p.Child("effect"), t.Effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
	}
	switch t.Operator {
	case corev1.TolerationOpEqual, "":
		for _, msg := range validation.IsValidLabelValue(t.Value) {
			allErrs = append(allErrs, field.Invalid(p.Child("value"), t.Value, msg))
		}
	case corev1.TolerationOpExists:
		if t.Value != "" {
			allErrs = append(allErrs, field.Invalid(p.Child("value"), t.Value, "value must be empty when `operator` is 'Exists'"))
		}
	case corev1.TolerationOpLt, corev1.TolerationOpGt:
		if _, err := strconv.ParseInt(t.Value, 10, 64); err != nil {
			allErrs = append(allErrs, field.Invalid(p.Child("value"), t.Value, "must be an integer when `operator` is 'Lt' or 'Gt'"))
		}
	default:
		allErrs = append(allErrs, field.NotSupported(p.Child("operator"), t.Operator,
			[]corev1.TolerationOperator{corev1.TolerationOpEqual, corev1.TolerationOpExists, corev1.TolerationOpLt, corev1.TolerationOpGt}))
	}
	allErrs = append(allErrs, validateTaintEffect(t.Effect, true, p.Child("effect"))...)
	return allErrs
}

func validateTaintEffect(effect corev1.TaintEffect, allowEmpty bool, p *field.Path) field.ErrorList {
	switch effect {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		return nil
	case "":
		if allowEmpty {
			return nil
		}
		return field.ErrorList{field.Required(p, "")}
	default:
		return field.ErrorList{field.NotSupported(p, effect,
			[]corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute})}
	}
}

// validateNodeAffinity parses the node selector terms with the same
// component-helpers code that matches them, so that whatever validates here
// also matches as the scheduler would.
func validateNodeAffinity(na *corev1.NodeAffinity, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if req := na.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
		reqPath := p.Child("requiredDuringSchedulingIgnoredDuringExecution")
		if len(req.NodeSelectorTerms) == 0 {
			allErrs = append(allErrs, field.Required(reqPath.Child("nodeSelectorTerms"), "must have at least one node selector term"))
		}
		for i, term := range req.NodeSelectorTerms {
			allErrs = append(allErrs, validateMatchFieldKeys(term.MatchFields, reqPath.Child("nodeSelectorTerms").Index(i).Child("matchFields"))...)
		}
		_, err := nodeaffinity.NewNodeSelector(req, field.WithPath(reqPath))
		allErrs = append(allErrs, aggregateToFieldErrors(err, reqPath)...)
	}
	prefPath := p.Child("preferredDuringSchedulingIgnoredDuringExecution")
	for i, term := range na.PreferredDuringSchedulingIgnoredDuringExecution {
		if term.Weight < 1 || term.Weight > 100 {
			allErrs = append(allErrs, field.Invalid(prefPath.Index(i).Child("weight"), term.Weight, validation.InclusiveRangeError(1, 100)))
		}
		allErrs = append(allErrs, validateMatchFieldKeys(term.Preference.MatchFields, prefPath.Index(i).Child("preference", "matchFields"))...)
	}
	_, err := nodeaffinity.NewPreferredSchedulingTerms(na.PreferredDuringSchedulingIgnoredDuringExecution, field.WithPath(prefPath))
	return append(allErrs, aggregateToFieldErrors(err, prefPath)...)
}

// validateMatchFieldKeys allows only metadata.name, the one node field a
// node selector can match.
func validateMatchFieldKeys(reqs []corev1.NodeSelectorRequirement, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for i, r := range reqs {
		if r.Key != metav1.ObjectNameField {
			allErrs = append(allErrs, field.NotSupported(p.Index(i).Child("key"), r.Key, []string{metav1.ObjectNameField}))
		}
	}
	return allErrs
}

// aggregateToFieldErrors unpacks the aggregate of field errors returned by
// the component-helpers parsers.
func aggregateToFieldErrors(err error, p *field.Path) field.ErrorList {
	if err == nil {
		return nil
	}
	var errs []error
	var agg utilerrors.Aggregate
	if errors.As(err, &agg) {
		errs = agg.Errors()
	} else {
		errs = []error{err}
	}
	var allErrs field.ErrorList
	for _, e := range errs {
		var fe *field.Error
		if errors.As(e, &fe) {
			allErrs = append(allErrs, fe)
		} else {
			allErrs = append(allErrs, field.Invalid(p, nil, e.Error()))
		}
	}
	return allErrs
}

// volumeSourceCount counts the volume types set in vs, all of which are
// pointer fields, so that a new type in k8s.io/api is counted without a code
// change here.
func volumeSourceCount(vs *corev1.VolumeSource) int {
	return len(volumeSourceTypes(vs))
}

func volumeSourceTypes(vs *corev1.VolumeSource) []string {
	var names []string
	v := reflect.ValueOf(vs).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			names = append(names, jsonName(v.Type().Field(i)))
		}
	}
	return names
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

var validHostPathTypes = []corev1.HostPathType{
	corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory, corev1.HostPathFileOrCreate,
	corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev,
}

func validateVolumes(volumes []corev1.Volume, p *field.Path) (map[string]*corev1.Volume, field.ErrorList) {
	var allErrs field.ErrorList
	byName := map[string]*corev1.Volume{}
	for i := range volumes {
		v := &volumes[i]
		vp := p.Index(i)
		namePath := vp.Child("name")
		switch {
		case v.Name == "":
			allErrs = append(allErrs, field.Required(namePath, ""))
		case byName[v.Name] != nil:
			allErrs = append(allErrs, field.Duplicate(namePath, v.Name))
		default:
			for _, msg := range validation.IsDNS1123Label(v.Name) {
				allErrs = append(allErrs, field.Invalid(namePath, v.Name, msg))
			}
			byName[v.Name] = v
		}
		types := volumeSourceTypes(&v.VolumeSource)
		switch {
		case len(types) == 0:
			allErrs = append(allErrs, field.Required(vp, "must specify a volume type"))
		case len(types) > 1:
			allErrs = append(allErrs, field.Forbidden(vp.Child(types[1]), "may not specify more than 1 volume type"))
		}
		allErrs = append(allErrs, validateVolumeSource(&v.VolumeSource, vp)...)
	}
	return byName, allErrs
}

func validateVolumeSource(vs *corev1.VolumeSource, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if hp := vs.HostPath; hp != nil {
		hpp := p.Child("hostPath")
		allErrs = append(allErrs, validateAbsolutePath(hp.Path, hpp.Child("path"))...)
		if hp.Type != nil && !contains(validHostPathTypes, *hp.Type) {
			allErrs = append(allErrs, field.NotSupported(hpp.Child("type"), *hp.Type, validHostPathTypes))
		}
	}
	if ed := vs.EmptyDir; ed != nil {
		edp := p.Child("emptyDir")
		switch m := ed.Medium; {
		case m == corev1.StorageMediumDefault, m == corev1.StorageMediumMemory, m == corev1.StorageMediumHugePages,
			strings.HasPrefix(string(m), string(corev1.StorageMediumHugePagesPrefix)):
		default:
			allErrs = append(allErrs, field.NotSupported(edp.Child("medium"), m,
				[]corev1.StorageMedium{corev1.StorageMediumDefault, corev1.StorageMediumMemory, corev1.StorageMediumHugePages}))
		}
		if ed.SizeLimit != nil && ed.SizeLimit.Sign() < 0 {
			allErrs = append(allErrs, field.Invalid(edp.Child("sizeLimit"), ed.SizeLimit.String(), apimachineryvalidation.IsNegativeErrorMsg))
		}
	}
	if cm := vs.ConfigMap; cm != nil {
		cmp := p.Child("configMap")
		if cm.Name == "" {
			allErrs = append(allErrs, field.Required(cmp.Child("name"), ""))
		}
		allErrs = append(allErrs, validateMode(cm.DefaultMode, cmp.Child("defaultMode"))...)
		allErrs = append(allErrs, validateKeyToPaths(cm.Items, cmp.Child("items"))...)
	}
	if s := vs.Secret; s != nil {
		sp := p.Child("secret")
		if s.SecretName == "" {
			allErrs = append(allErrs, field.Required(sp.Child("secretName"), ""))
		}
		allErrs = append(allErrs, validateMode(s.DefaultMode, sp.Child("defaultMode"))...)
		allErrs = append(allErrs, validateKeyToPaths(s.Items, sp.Child("items"))...)
	}
	if d := vs.DownwardAPI; d != nil {
		dp := p.Child("downwardAPI")
		allErrs = append(allErrs, validateMode(d.DefaultMode, dp.Child("defaultMode"))...)
		for i, item := range d.Items {
			ip := dp.Child("items").Index(i)
			allErrs = append(allErrs, validateRelativePath(item.Path, ip.Child("path"), true)...)
			allErrs = append(allErrs, validateMode(item.Mode, ip.Child("mode"))...)
			if item.FieldRef != nil {
				allErrs = append(allErrs, validateFieldRef(item.FieldRef, volumeFieldPaths, ip.Child("fieldRef"))...)
			}
		}
	}
	if pr := vs.Projected; pr != nil {
		allErrs = append(allErrs, validateMode(pr.DefaultMode, p.Child("projected", "defaultMode"))...)
	}
	return allErrs
}

func validateKeyToPaths(items []corev1.KeyToPath, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for i, item := range items {
		ip := p.Index(i)
		if item.Key == "" {
			allErrs = append(allErrs, field.Required(ip.Child("key"), ""))
		}
		allErrs = append(allErrs, validateRelativePath(item.Path, ip.Child("path"), true)...)
		allErrs = append(allErrs, validateMode(item.Mode, ip.Child("mode"))...)
	}
	return allErrs
}

func validateMode(mode *int32, p *field.Path) field.ErrorList {
	if mode != nil && (*mode < 0 || *mode > 0o777) {
		return field.ErrorList{field.Invalid(p, *mode, "must be a number between 0 and 0777 (octal), both inclusive")}
	}
	return nil
}

func validateAbsolutePath(s string, p *field.Path) field.ErrorList {
	switch {
	case s == "":
		return field.ErrorList{field.Required(p, "")}
	case !path.IsAbs(s):
		return field.ErrorList{field.Invalid(p, s, "must be an absolute path")}
	case hasBackstep(s):
		return field.ErrorList{field.Invalid(p, s, "must not contain '..'")}
	}
	return nil
}

func validateRelativePath(s string, p *field.Path, required bool) field.ErrorList {
	switch {
	case s == "":
		if required {
			return field.ErrorList{field.Required(p, "")}
		}
	case path.IsAbs(s):
		return field.ErrorList{field.Invalid(p, s, "must be a relative path")}
	case hasBackstep(s):
		return field.ErrorList{field.Invalid(p, s, "must not contain '..'")}
	}
	return nil
}

func hasBackstep(s string) bool {
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Field paths a downward API fieldRef may name (K8S-SEMANTICS.md §7.7);
// metadata.labels['k'] and metadata.annotations['k'] are allowed in both.
var (
	envFieldPaths = []string{"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
		"spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"}
	volumeFieldPaths = []string{"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations"}
)

func validateFieldRef(ref *corev1.ObjectFieldSelector, allowed []string, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if ref.APIVersion != "v1" {
		allErrs = append(allErrs, field.NotSupported(p.Child("apiVersion"), ref.APIVersion, []string{"v1"}))
	}
	fp := p.Child("fieldPath")
	if ref.FieldPath == "" {
		return append(allErrs, field.Required(fp, ""))
	}
	if contains(allowed, ref.FieldPath) {
		return allErrs
	}
	for _, prefix := range []string{"metadata.labels", "metadata.annotations"} {
		if rest, ok := strings.CutPrefix(ref.FieldPath, prefix+"['"); ok {
			key, ok := strings.CutSuffix(rest, "']")
			if !ok {
				break
			}
			for _, msg := range validation.IsQualifiedName(key) {
				allErrs = append(allErrs, field.Invalid(fp, ref.FieldPath, msg))
			}
			return allErrs
		}
	}
	return append(allErrs, field.NotSupported(fp, ref.FieldPath, allowed))
}

var validResourceFieldRefs = []string{"limits.cpu", "limits.memory", "limits.ephemeral-storage",
	"requests.cpu", "requests.memory", "requests.ephemeral-storage"}

// containerValidator carries what container checks share across the pod:
// the declared volumes, the container names (unique across init and app
// containers) and the host ports in use.
type containerValidator struct {
	volumes     map[string]*corev1.Volume
	names       map[string]bool
	hostPorts   map[string]bool
	hostNetwork bool
}

func (cv *containerValidator) validate(c *corev1.Container, p *field.Path, init bool) field.ErrorList {
	var allErrs field.ErrorList
	namePath := p.Child("name")
	switch {
	case c.Name == "":
		allErrs = append(allErrs, field.Required(namePath, ""))
	case cv.names[c.Name]:
		allErrs = append(allErrs, field.Duplicate(namePath, c.Name))
	default:
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			allErrs = append(allErrs, field.Invalid(namePath, c.Name, msg))
		}
		cv.names[c.Name] = true
	}
	switch {
	case c.Image == "":
		allErrs = append(allErrs, field.Required(p.Child("image"), ""))
	case strings.TrimSpace(c.Image) != c.Image:
		allErrs = append(allErrs, field.Invalid(p.Child("image"), c.Image, "must not have leading or trailing whitespace"))
	}
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	case "":
		allErrs = append(allErrs, field.Required(p.Child("imagePullPolicy"), ""))
	default:
		allErrs = append(allErrs, field.NotSupported(p.Child("imagePullPolicy"), c.ImagePullPolicy,
			[]corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}))
	}
	switch c.TerminationMessagePolicy {
	case corev1.TerminationMessageReadFile, corev1.TerminationMessageFallbackToLogsOnError:
	case "":
		allErrs = append(allErrs, field.Required(p.Child("terminationMessagePolicy"), ""))
	default:
		allErrs = append(allErrs, field.NotSupported(p.Child("terminationMessagePolicy"), c.TerminationMessagePolicy,
			[]corev1.TerminationMessagePolicy{corev1.TerminationMessageReadFile, corev1.TerminationMessageFallbackToLogsOnError}))
	}
	allErrs = append(allErrs, cv.validatePorts(c.Ports, p.Child("ports"))...)
	allErrs = append(allErrs, validateEnv(c, p)...)
	allErrs = append(allErrs, cv.validateMounts(c, p.Child("volumeMounts"))...)
	allErrs = append(allErrs, validateResources(&c.Resources, p.Child("resources"))...)

	sidecar := init && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	if init && c.RestartPolicy != nil && !sidecar {
		allErrs = append(allErrs, field.NotSupported(p.Child("restartPolicy"), *c.RestartPolicy, []corev1.ContainerRestartPolicy{corev1.ContainerRestartPolicyAlways}))
	}
	if !init && c.RestartPolicy != nil {
		allErrs = append(allErrs, field.Forbidden(p.Child("restartPolicy"), "may not be set for non-init containers"))
	}
	probes := []struct {
		name        string
		probe       *corev1.Probe
		successOnly bool
	}{
		{"livenessProbe", c.LivenessProbe, true},
		{"readinessProbe", c.ReadinessProbe, false},
		{"startupProbe", c.StartupProbe, true},
	}
	for _, pr := range probes {
		if pr.probe == nil {
			continue
		}
		if init && !sidecar {
			allErrs = append(allErrs, field.Forbidden(p.Child(pr.name), "may not be set for init containers without restartPolicy=Always"))
			continue
		}
		allErrs = append(allErrs, validateProbe(pr.probe, pr.successOnly, p.Child(pr.name))...)
	}
	if lc := c.Lifecycle; lc != nil {
		if init && !sidecar {
			allErrs = append(allErrs, field.Forbidden(p.Child("lifecycle"), "may not be set for init containers without restartPolicy=Always"))
		} else {
			if lc.PostStart != nil {
				allErrs = append(allErrs, validateLifecycleHandler(lc.PostStart, p.Child("lifecycle", "postStart"))...)
			}
			if lc.PreStop != nil {
				allErrs = append(allErrs, validateLifecycleHandler(lc.PreStop, p.Child("lifecycle", "preStop"))...)
			}
		}
	}
	return allErrs
}

var validProtocols = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

func (cv *containerValidator) validatePorts(ports []corev1.ContainerPort, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	names := map[string]bool{}
	for i, port := range ports {
		pp := p.Index(i)
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				allErrs = append(allErrs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names[port.Name] {
				allErrs = append(allErrs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names[port.Name] = true
		}
		if port.ContainerPort == 0 {
			allErrs = append(allErrs, field.Required(pp.Child("containerPort"), ""))
		} else {
			for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
				allErrs = append(allErrs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
			}
		}
		if port.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(port.HostPort)) {
				allErrs = append(allErrs, field.Invalid(pp.Child("hostPort"), port.HostPort, msg))
			}
			if cv.hostNetwork && port.HostPort != port.ContainerPort {
				allErrs = append(allErrs, field.Invalid(pp.Child("hostPort"), port.HostPort, "must match `containerPort` when `hostNetwork` is true"))
			}
			key := fmt.Sprintf("%s/%d/%s", port.HostIP, port.HostPort, port.Protocol)
			if cv.hostPorts[key] {
				allErrs = append(allErrs, field.Duplicate(pp.Child("hostPort"), fmt.Sprintf("%d/%s", port.HostPort, port.Protocol)))
			}
			cv.hostPorts[key] = true
		}
		switch {
		case port.Protocol == "":
			allErrs = append(allErrs, field.Required(pp.Child("protocol"), ""))
		case !contains(validProtocols, port.Protocol):
			allErrs = append(allErrs, field.NotSupported(pp.Child("protocol"), port.Protocol, validProtocols))
		}
	}
	return allErrs
}

func validateEnv(c *corev1.Container, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for i, ev := range c.Env {
		ep := p.Child("env").Index(i)
		if ev.Name == "" {
			allErrs = append(allErrs, field.Required(ep.Child("name"), ""))
		}
		for _, msg := range validation.IsRelaxedEnvVarName(ev.Name) {
			allErrs = append(allErrs, field.Invalid(ep.Child("name"), ev.Name, msg))
		}
		if ev.ValueFrom != nil {
			allErrs = append(allErrs, validateEnvVarSource(ev.ValueFrom, ev.Value != "", ep.Child("valueFrom"))...)
		}
	}
	for i, ef := range c.EnvFrom {
		efp := p.Child("envFrom").Index(i)
		switch {
		case ef.ConfigMapRef == nil && ef.SecretRef == nil:
			allErrs = append(allErrs, field.Invalid(efp, "", "must specify one of: `configMapRef` or `secretRef`"))
		case ef.ConfigMapRef != nil && ef.SecretRef != nil:
			allErrs = append(allErrs, field.Invalid(efp, "", "may not have more than one field specified at a time"))
		case ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == "":
			allErrs = append(allErrs, field.Required(efp.Child("configMapRef", "name"), ""))
		case ef.SecretRef != nil && ef.SecretRef.Name == "":
			allErrs = append(allErrs, field.Required(efp.Child("secretRef", "name"), ""))
		}
	}
	return allErrs
}

func validateEnvVarSource(vf *corev1.EnvVarSource, hasValue bool, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if hasValue {
		allErrs = append(allErrs, field.Invalid(p, "", "may not be specified when `value` is not empty"))
	}
	n := 0
	if vf.FieldRef != nil {
		n++
		allErrs = append(allErrs, validateFieldRef(vf.FieldRef, envFieldPaths, p.Child("fieldRef"))...)
	}
	if vf.ResourceFieldRef != nil {
		n++
		r := vf.ResourceFieldRef.Resource
		if !contains(validResourceFieldRefs, r) && !strings.HasPrefix(r, "limits.hugepages-") && !strings.HasPrefix(r, "requests.hugepages-") {
			allErrs = append(allErrs, field.NotSupported(p.Child("resourceFieldRef", "resource"), r, validResourceFieldRefs))
		}
	}
	for _, ref := range []struct {
		name    string
		set     bool
		objName string
		key     string
	}{
		{"configMapKeyRef", vf.ConfigMapKeyRef != nil, nameOf(vf.ConfigMapKeyRef), keyOf(vf.ConfigMapKeyRef)},
		{"secretKeyRef", vf.SecretKeyRef != nil, nameOfSecret(vf.SecretKeyRef), keyOfSecret(vf.SecretKeyRef)},
	} {
		if !ref.set {
			continue
		}
		n++
		rp := p.Child(ref.name)
		if ref.objName == "" {
			allErrs = append(allErrs, field.Required(rp.Child("name"), ""))
		}
		if ref.key == "" {
			allErrs = append(allErrs, field.Required(rp.Child("key"), ""))
		} else {
			for _, msg := range validation.IsConfigMapKey(ref.key) {
				allErrs = append(allErrs, field.Invalid(rp.Child("key"), ref.key, msg))
			}
		}
	}
	switch {
	case n == 0:
		allErrs = append(allErrs, field.Invalid(p, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
	case n > 1:
		allErrs = append(allErrs, field.Invalid(p, "", "may not have more than one field specified at a time"))
	}
	return allErrs
}

func nameOf(s *corev1.ConfigMapKeySelector) string {
	if s == nil {
		return ""
	}
	return s.Name
}

func keyOf(s *corev1.ConfigMapKeySelector) string {
	if s == nil {
		return ""
	}
	return s.Key
}

func nameOfSecret(s *corev1.SecretKeySelector) string {
	if s == nil {
		return ""
	}
	return s.Name
}

func keyOfSecret(s *corev1.SecretKeySelector) string {
	if s == nil {
		return ""
	}
	return s.Key
}

var validPropagation = []corev1.MountPropagationMode{corev1.MountPropagationNone, corev1.MountPropagationHostToContainer, corev1.MountPropagationBidirectional}

func (cv *containerValidator) validateMounts(c *corev1.Container, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	paths := map[string]bool{}
	for i, m := range c.VolumeMounts {
		mp := p.Index(i)
		switch {
		case m.Name == "":
			allErrs = append(allErrs, field.Required(mp.Child("name"), ""))
		case cv.volumes[m.Name] == nil:
			allErrs = append(allErrs, field.NotFound(mp.Child("name"), m.Name))
		}
		allErrs = append(allErrs, validateAbsolutePath(m.MountPath, mp.Child("mountPath"))...)
		if paths[m.MountPath] {
			allErrs = append(allErrs, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be unique"))
		}
		paths[m.MountPath] = true
		allErrs = append(allErrs, validateRelativePath(m.SubPath, mp.Child("subPath"), false)...)
		if m.SubPath != "" && m.SubPathExpr != "" {
			allErrs = append(allErrs, field.Invalid(mp.Child("subPathExpr"), m.SubPathExpr, "subPathExpr and subPath are mutually exclusive"))
		}
		allErrs = append(allErrs, validateRelativePath(m.SubPathExpr, mp.Child("subPathExpr"), false)...)
		if mode := m.MountPropagation; mode != nil {
			switch {
			case !contains(validPropagation, *mode):
				allErrs = append(allErrs, field.NotSupported(mp.Child("mountPropagation"), *mode, validPropagation))
			case *mode == corev1.MountPropagationBidirectional && !isPrivileged(c):
				allErrs = append(allErrs, field.Forbidden(mp.Child("mountPropagation"), "Bidirectional mount propagation is available only to privileged containers"))
			}
		}
	}
	return allErrs
}

func isPrivileged(c *corev1.Container) bool {
	return c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
}

// standardContainerResources are the resource names a container may use
// without a domain prefix (besides hugepages-<size>).
var standardContainerResources = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

func validateResources(r *corev1.ResourceRequirements, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, list := range []struct {
		name string
		rl   corev1.ResourceList
	}{{"limits", r.Limits}, {"requests", r.Requests}} {
		for name, q := range list.rl {
			rp := p.Child(list.name).Key(string(name))
			allErrs = append(allErrs, validateResourceName(name, rp)...)
			if q.Sign() < 0 {
				allErrs = append(allErrs, field.Invalid(rp, q.String(), apimachineryvalidation.IsNegativeErrorMsg))
			}
		}
	}
	for name, req := range r.Requests {
		if limit, ok := r.Limits[name]; ok && req.Cmp(limit) > 0 {
			allErrs = append(allErrs, field.Invalid(p.Child("requests").Key(string(name)), req.String(),
				fmt.Sprintf("must be less than or equal to %s limit of %s", name, limit.String())))
		}
	}
	return allErrs
}

func validateResourceName(name corev1.ResourceName, p *field.Path) field.ErrorList {
	s := string(name)
	if strings.Contains(s, "/") {
		var allErrs field.ErrorList
		for _, msg := range validation.IsQualifiedName(s) {
			allErrs = append(allErrs, field.Invalid(p, s, msg))
		}
		return allErrs
	}
	if contains(standardContainerResources, name) || strings.HasPrefix(s, corev1.ResourceHugePagesPrefix) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, s, "must be a standard resource for containers")}
}

func validateProbe(pr *corev1.Probe, successMustBeOne bool, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateHandler(probeHandlers(&pr.ProbeHandler, p), p)...)
	for _, f := range []struct {
		name  string
		value int32
	}{
		{"initialDelaySeconds", pr.InitialDelaySeconds},
		{"timeoutSeconds", pr.TimeoutSeconds},
		{"periodSeconds", pr.PeriodSeconds},
		{"successThreshold", pr.SuccessThreshold},
		{"failureThreshold", pr.FailureThreshold},
	} {
		allErrs = append(allErrs, apimachineryvalidation.ValidateNonnegativeField(int64(f.value), p.Child(f.name))...)
	}
	if successMustBeOne && pr.SuccessThreshold != 1 {
		allErrs = append(allErrs, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	if g := pr.TerminationGracePeriodSeconds; g != nil && *g <= 0 {
		allErrs = append(allErrs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than 0"))
	}
	return allErrs
}

func validateLifecycleHandler(h *corev1.LifecycleHandler, p *field.Path) field.ErrorList {
	var sleepErrs field.ErrorList
	if h.Sleep != nil {
		sleepErrs = apimachineryvalidation.ValidateNonnegativeField(h.Sleep.Seconds, p.Child("sleep", "seconds"))
	}
	return validateHandler([]handler{
		{"exec", h.Exec != nil, validateExec(h.Exec, p.Child("exec"))},
		{"httpGet", h.HTTPGet != nil, validateHTTPGet(h.HTTPGet, p.Child("httpGet"))},
		{"tcpSocket", h.TCPSocket != nil, validateTCPSocket(h.TCPSocket, p.Child("tcpSocket"))},
		{"sleep", h.Sleep != nil, sleepErrs},
	}, p)
}

// handler is one of the mutually exclusive actions of a probe or hook, with
// the errors of its own fields.
type handler struct {
	name string
	set  bool
	errs field.ErrorList
}

// probeHandlers lists a probe's handlers; ProbeHandler is inlined in Probe,
// so their paths hang directly off the probe's.
func probeHandlers(h *corev1.ProbeHandler, p *field.Path) []handler {
	return []handler{
		{"exec", h.Exec != nil, validateExec(h.Exec, p.Child("exec"))},
		{"httpGet", h.HTTPGet != nil, validateHTTPGet(h.HTTPGet, p.Child("httpGet"))},
		{"tcpSocket", h.TCPSocket != nil, validateTCPSocket(h.TCPSocket, p.Child("tcpSocket"))},
		{"grpc", h.GRPC != nil, validateGRPC(h.GRPC, p.Child("grpc"))},
	}
}

// validateHandler requires exactly one handler and collects the errors of
// the ones that are set.
func validateHandler(handlers []handler, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	var set []string
	for _, h := range handlers {
		if !h.set {
			continue
		}
		set = append(set, h.name)
		allErrs = append(allErrs, h.errs...)
	}
	switch {
	case len(set) == 0:
		allErrs = append(allErrs, field.Required(p, "must specify a handler type"))
	case len(set) > 1:
		allErrs = append(allErrs, field.Forbidden(p.Child(set[1]), "may not specify more than 1 handler type"))
	}
	return allErrs
}

func validateExec(e *corev1.ExecAction, p *field.Path) field.ErrorList {
	if e != nil && len(e.Command) == 0 {
		return field.ErrorList{field.Required(p.Child("command"), "")}
	}
	return nil
}

func validateHTTPGet(h *corev1.HTTPGetAction, p *field.Path) field.ErrorList {
	if h == nil {
		return nil
	}
	allErrs := validatePortNumOrName(h.Port, p.Child("port"))
	switch h.Scheme {
	case corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
	default:
		allErrs = append(allErrs, field.NotSupported(p.Child("scheme"), h.Scheme, []corev1.URIScheme{corev1.URISchemeHTTP, corev1.URISchemeHTTPS}))
	}
	for i, hdr := range h.HTTPHeaders {
		for _, msg := range validation.IsHTTPHeaderName(hdr.Name) {
			allErrs = append(allErrs, field.Invalid(p.Child("httpHeaders").Index(i).Child("name"), hdr.Name, msg))
		}
	}
	return allErrs
}

func validateTCPSocket(t *corev1.TCPSocketAction, p *field.Path) field.ErrorList {
	if t == nil {
		return nil
	}
	return validatePortNumOrName(t.Port, p.Child("port"))
}

func validateGRPC(g *corev1.GRPCAction, p *field.Path) field.ErrorList {
	if g == nil {
		return nil
	}
	var allErrs field.ErrorList
	for _, msg := range validation.IsValidPortNum(int(g.Port)) {
		allErrs = append(allErrs, field.Invalid(p.Child("port"), g.Port, msg))
	}
	return allErrs
}

func validatePortNumOrName(port intstr.IntOrString, p *field.Path) field.ErrorList {
	var msgs []string
	if port.Type == intstr.Int {
		msgs = validation.IsValidPortNum(port.IntValue())
	} else {
		msgs = validation.IsValidPortName(port.StrVal)
	}
	var allErrs field.ErrorList
	for _, msg := range msgs {
		allErrs = append(allErrs, field.Invalid(p, port.String(), msg))
	}
	return allErrs
}
