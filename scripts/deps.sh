#!/usr/bin/env bash
# Installs, with apt-get, the system packages daemonlet's build and tests
# need, and only those that are missing. Idempotent: with everything present
# it changes nothing and needs no root. It never starts or enables a
# service: our tests run private daemons, never the system ones.
set -euo pipefail

# package:binary — a package counts as present when dpkg has it installed
# or when its binary is already on the machine (installed another way).
deps=(
	containerd:/usr/bin/containerd
	runc:/usr/sbin/runc
	containernetworking-plugins:/usr/lib/cni/bridge
	iptables:/usr/sbin/iptables
	docker-registry:/usr/bin/docker-registry
	iproute2:/usr/sbin/ip
	prometheus:/usr/bin/promtool
	etcd-server:/usr/bin/etcd
)

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for dep in "${deps[@]}"; do
	pkg=${dep%%:*}
	bin=${dep#*:}
	if ! installed "$pkg" && [ ! -x "$bin" ]; then
		missing+=("$pkg")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages: ${missing[*]}" >&2
	echo "deps: run as root (sudo make deps) or install them: apt-get install ${missing[*]}" >&2
	exit 1
fi

# policy-rc.d answering 101 ("action forbidden") keeps the packages'
# postinst scripts from starting the system containerd, registry or etcd. An
# existing policy is the administrator's: leave it as it is.
policy=/usr/sbin/policy-rc.d
own_policy=
cleanup() {
	if [ -n "$own_policy" ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	own_policy=1
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt run instead of failing on its lock.
apt-get -o DPkg::Lock::Timeout=300 update
apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}"
