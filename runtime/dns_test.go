package runtime

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const nodeResolvConfText = `# written by the node's DHCP client
; another comment
nameserver 192.0.2.1
nameserver 192.0.2.2
search old.example
search corp.example. lab.example .
options ndots:2 timeout:1
options ndots:3 rotate
`

func TestResolvConfParse(t *testing.T) {
	d := parseResolvConf([]byte(nodeResolvConfText))
	if want := []string{"192.0.2.1", "192.0.2.2"}; !slices.Equal(d.nameservers, want) {
		t.Errorf("nameservers = %q, want %q", d.nameservers, want)
	}
	// The last search line wins; trailing dots and "." are dropped.
	if want := []string{"corp.example", "lab.example"}; !slices.Equal(d.searches, want) {
		t.Errorf("searches = %q, want %q", d.searches, want)
	}
	if want := []string{"ndots:3", "timeout:1", "rotate"}; !slices.Equal(d.options, want) {
		t.Errorf("options = %q, want %q", d.options, want)
	}
}

func TestResolvConfPerDNSPolicy(t *testing.T) {
	node := parseResolvConf([]byte(nodeResolvConfText))
	nodeFile := "search corp.example lab.example\nnameserver 192.0.2.1\nnameserver 192.0.2.2\noptions ndots:3 timeout:1 rotate\n"
	five := "5"
	extra := &corev1.PodDNSConfig{
		Nameservers: []string{"192.0.2.2", "198.51.100.7"},
		Searches:    []string{"pods.example", "corp.example"},
		Options: []corev1.PodDNSConfigOption{
			{Name: "ndots", Value: &five},
			{Name: "edns0"},
		},
	}
	tests := []struct {
		name      string
		policy    corev1.DNSPolicy
		hostNet   bool
		config    *corev1.PodDNSConfig
		noNodeCfg bool
		want      string
	}{
		{name: "Default", policy: corev1.DNSDefault, want: nodeFile},
		{name: "ClusterFirst falls back to the node", policy: corev1.DNSClusterFirst, want: nodeFile},
		{name: "ClusterFirst with hostNetwork", policy: corev1.DNSClusterFirst, hostNet: true, want: nodeFile},
		{name: "ClusterFirstWithHostNet", policy: corev1.DNSClusterFirstWithHostNet, hostNet: true, want: nodeFile},
		{name: "None without dnsConfig", policy: corev1.DNSNone, want: ""},
		{
			name: "None takes only dnsConfig", policy: corev1.DNSNone, config: extra,
			want: "search pods.example corp.example\nnameserver 192.0.2.2\nnameserver 198.51.100.7\noptions ndots:5 edns0\n",
		},
		{
			name: "dnsConfig merged into Default", policy: corev1.DNSDefault, config: extra,
			// 3 nameservers at most; duplicates once; ndots overridden in place.
			want: "search corp.example lab.example pods.example\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 198.51.100.7\noptions ndots:5 timeout:1 rotate edns0\n",
		},
		{
			name: "node resolv.conf disabled", policy: corev1.DNSDefault, noNodeCfg: true,
			want: "search .\nnameserver 127.0.0.1\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := &corev1.PodSpec{DNSPolicy: tc.policy, HostNetwork: tc.hostNet, DNSConfig: tc.config}
			n := node
			if tc.noNodeCfg {
				n = dnsSettings{}
			}
			got := string(podDNS(spec, n, !tc.noNodeCfg).resolvConf())
			if got != tc.want {
				t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestResolvConfLimits(t *testing.T) {
	spec := &corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{}}
	for i := range 5 {
		spec.DNSConfig.Nameservers = append(spec.DNSConfig.Nameservers, fmt.Sprintf("192.0.2.%d", i+1))
	}
	for i := range 40 {
		spec.DNSConfig.Searches = append(spec.DNSConfig.Searches, fmt.Sprintf("d%d.example", i))
	}
	d := podDNS(spec, dnsSettings{}, true)
	if len(d.nameservers) != maxDNSNameservers || d.nameservers[2] != "192.0.2.3" {
		t.Errorf("nameservers = %q, want the first 3", d.nameservers)
	}
	if len(d.searches) != maxDNSSearchPaths || d.searches[31] != "d31.example" {
		t.Errorf("searches = %d (%q...), want the first 32", len(d.searches), d.searches[:1])
	}

	// Domains longer than 253 characters are dropped; then the line is cut
	// from the end to 2048 characters.
	long := strings.Repeat("a", 254)
	spec.DNSConfig.Searches = []string{"first.example", long}
	for i := range 30 {
		spec.DNSConfig.Searches = append(spec.DNSConfig.Searches, fmt.Sprintf("%02d%s", i, strings.Repeat("b", 98)))
	}
	d = podDNS(spec, dnsSettings{}, true)
	if slices.Contains(d.searches, long) {
		t.Error("a search domain over 253 characters was kept")
	}
	line := strings.Join(d.searches, " ")
	if len(line) > maxDNSSearchListChars || len(line) < maxDNSSearchListChars-101 {
		t.Errorf("search line is %d characters, want the most domains that fit in %d", len(line), maxDNSSearchListChars)
	}
	if d.searches[0] != "first.example" {
		t.Errorf("searches start with %q, want the first ones kept", d.searches[0])
	}
}

func TestHostsFile(t *testing.T) {
	aliases := []corev1.HostAlias{{IP: "192.0.2.9", Hostnames: []string{"db", "db.example"}}}
	want := "# Kubernetes-managed hosts file.\n" +
		"127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"fe00::0\tip6-mcastprefix\n" +
		"fe00::1\tip6-allnodes\n" +
		"fe00::2\tip6-allrouters\n" +
		"10.231.4.7\tweb-0\n" +
		"\n# Entries added by HostAliases.\n" +
		"192.0.2.9\tdb\tdb.example\n"
	if got := string(managedHosts("10.231.4.7", "web-0", aliases)); got != want {
		t.Errorf("hosts:\n%s\nwant:\n%s", got, want)
	}

	node := "127.0.0.1 localhost\n192.0.2.1 node-1"
	want = "# Kubernetes-managed hosts file (host network).\n" + node + "\n" +
		"\n# Entries added by HostAliases.\n192.0.2.9\tdb\tdb.example\n"
	if got := string(hostNetworkHosts([]byte(node), aliases)); got != want {
		t.Errorf("hostNetwork hosts:\n%s\nwant:\n%s", got, want)
	}
	if got := string(hostNetworkHosts([]byte(node+"\n"), nil)); got != "# Kubernetes-managed hosts file (host network).\n"+node+"\n" {
		t.Errorf("hostNetwork hosts without aliases:\n%s", got)
	}
}

func TestHostsHostname(t *testing.T) {
	long := strings.Repeat("x", 62) + "-y-more"
	tests := []struct {
		name, hostname, want string
	}{
		{name: "web-0", want: "web-0"},
		{name: "web-0", hostname: "custom", want: "custom"},
		// Cut to 63, then the trailing '-' goes.
		{name: long, want: strings.Repeat("x", 62)},
	}
	for _, tc := range tests {
		pod := &Pod{Name: tc.name, Spec: &corev1.PodSpec{Hostname: tc.hostname}}
		got, err := podHostnameOf(pod)
		if err != nil || got != tc.want {
			t.Errorf("hostname of %q/%q = %q, %v; want %q", tc.name, tc.hostname, got, err, tc.want)
		}
	}
	if _, err := podHostnameOf(&Pod{Name: strings.Repeat("-", 70), Spec: &corev1.PodSpec{}}); err == nil {
		t.Error("a name of dashes gave a hostname")
	}
}
