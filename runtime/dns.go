package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The pod's /etc/resolv.conf, /etc/hosts and /etc/hostname are generated as
// kubelet generates them (pkg/kubelet/network/dns/dns.go and
// pkg/kubelet/kubelet_pods.go), so that images behave as on a real node.
// daemonlet has no cluster DNS, so ClusterFirst falls back to the node's
// resolvers exactly as a kubelet without --cluster-dns does.

// Limits kubelet applies to a pod's resolv.conf (the API server's
// MaxDNSNameservers, MaxDNSSearchPaths and MaxDNSSearchListChars).
const (
	maxDNSNameservers     = 3
	maxDNSSearchPaths     = 32
	maxDNSSearchListChars = 2048
)

// maxHostnameLen is the longest hostname kubelet gives a pod (a DNS label).
const maxHostnameLen = validation.DNS1123LabelMaxLength

// dnsSettings is what a resolv.conf says.
type dnsSettings struct {
	nameservers []string
	searches    []string
	// options are "name" or "name:value", in order of first appearance.
	options []string
}

// parseResolvConf reads a resolv.conf as kubelet reads the node's: every
// nameserver line counts, the last search line wins (with trailing dots
// dropped so "a." and "a" count once), and options accumulate with later
// values of the same option replacing earlier ones.
func parseResolvConf(data []byte) dnsSettings {
	var d dnsSettings
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fields := strings.Fields(line)
		switch fields[0] {
		case "nameserver":
			if len(fields) > 1 {
				d.nameservers = append(d.nameservers, fields[1])
			}
		case "search":
			d.searches = d.searches[:0:0]
			for _, s := range fields[1:] {
				if s != "." {
					d.searches = append(d.searches, strings.TrimSuffix(s, "."))
				}
			}
		case "options":
			d.options = mergeDNSOptions(d.options, fields[1:])
		}
	}
	return d
}

// optionName is the name part of a "name:value" resolver option.
func optionName(opt string) string {
	name, _, _ := strings.Cut(opt, ":")
	return name
}

// mergeDNSOptions returns base with each of extra added, an option of the
// same name in extra replacing the one in base where it stood.
func mergeDNSOptions(base, extra []string) []string {
	out := slices.Clone(base)
	for _, opt := range extra {
		i := slices.IndexFunc(out, func(o string) bool { return optionName(o) == optionName(opt) })
		if i >= 0 {
			out[i] = opt
		} else {
			out = append(out, opt)
		}
	}
	return out
}

// appendUnique appends the items of extra that list does not hold yet.
func appendUnique(list, extra []string) []string {
	out := slices.Clone(list)
	for _, s := range extra {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// podDNS computes the pod's resolver settings from its dnsPolicy and
// dnsConfig. node is the node's resolv.conf; nodeConfigured is false when
// the node's resolv.conf path is set to "" (kubelet's --resolv-conf=""),
// where kubelet points pods at the local resolver and an empty search.
func podDNS(spec *corev1.PodSpec, node dnsSettings, nodeConfigured bool) dnsSettings {
	var d dnsSettings
	if spec.DNSPolicy != corev1.DNSNone {
		// Default, ClusterFirstWithHostNet and ClusterFirst all end up with
		// the node's resolvers: there is no cluster DNS to point at.
		d = node
		if !nodeConfigured {
			d = dnsSettings{nameservers: []string{"127.0.0.1"}, searches: []string{"."}}
		}
	}
	if c := spec.DNSConfig; c != nil {
		d.nameservers = appendUnique(d.nameservers, c.Nameservers)
		d.searches = appendUnique(d.searches, c.Searches)
		opts := make([]string, 0, len(c.Options))
		for _, o := range c.Options {
			if o.Value != nil && *o.Value != "" {
				opts = append(opts, o.Name+":"+*o.Value)
			} else {
				opts = append(opts, o.Name)
			}
		}
		d.options = mergeDNSOptions(d.options, opts)
	}
	return fitDNSLimits(d)
}

// fitDNSLimits cuts the settings to what kubelet lets through: three
// nameservers, 32 search domains, none longer than a DNS subdomain (glibc
// aborts on longer ones), and a search line of at most 2048 characters,
// dropping domains from the end.
func fitDNSLimits(d dnsSettings) dnsSettings {
	if len(d.nameservers) > maxDNSNameservers {
		d.nameservers = d.nameservers[:maxDNSNameservers]
	}
	if len(d.searches) > maxDNSSearchPaths {
		d.searches = d.searches[:maxDNSSearchPaths]
	}
	d.searches = slices.DeleteFunc(slices.Clone(d.searches), func(s string) bool {
		return len(s) > validation.DNS1123SubdomainMaxLength
	})
	for len(d.searches) > 0 && len(strings.Join(d.searches, " ")) > maxDNSSearchListChars {
		d.searches = d.searches[:len(d.searches)-1]
	}
	return d
}

// resolvConf renders the settings as a resolv.conf.
func (d dnsSettings) resolvConf() []byte {
	var b bytes.Buffer
	if len(d.searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.searches, " "))
	}
	for _, ns := range d.nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(d.options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.options, " "))
	}
	return b.Bytes()
}

// podHostnameOf is the hostname kubelet gives a pod without hostNetwork:
// spec.hostname, else the pod name, cut to 63 characters without a
// trailing '-' or '.'.
func podHostnameOf(pod *Pod) (string, error) {
	name := pod.Name
	if pod.Spec.Hostname != "" {
		name = pod.Spec.Hostname
	}
	if len(name) > maxHostnameLen {
		name = strings.TrimRight(name[:maxHostnameLen], "-.")
	}
	if name == "" {
		return "", fmt.Errorf("pod %s/%s: no usable hostname", pod.Namespace, pod.Name)
	}
	return name, nil
}

// managedHosts is the /etc/hosts of a pod with its own network namespace.
func managedHosts(podIP, hostname string, aliases []corev1.HostAlias) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	if podIP != "" {
		fmt.Fprintf(&b, "%s\t%s\n", podIP, hostname)
	}
	b.Write(hostAliasEntries(aliases))
	return b.Bytes()
}

// hostNetworkHosts is the /etc/hosts of a hostNetwork pod: the node's own.
func hostNetworkHosts(node []byte, aliases []corev1.HostAlias) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file (host network).\n")
	b.Write(node)
	if len(node) > 0 && node[len(node)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.Write(hostAliasEntries(aliases))
	return b.Bytes()
}

// hostAliasEntries renders spec.hostAliases as kubelet appends them.
func hostAliasEntries(aliases []corev1.HostAlias) []byte {
	if len(aliases) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range aliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
	return b.Bytes()
}
