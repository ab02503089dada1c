#!/bin/sh
# Installs daemonlet on a node: the binary, the systemd units, the agent's
# settings and its token, then enables the agent (and, with --server-too,
# the server). --uninstall removes what it installed; the daemon pods keep
# running (as when the agent stops) unless --purge-pods is given.
#
#   deploy/install.sh [--binary PATH] [--root DIR] [--server URL]
#                     [--token TOKEN | --token-file FILE] [--server-too]
#   deploy/install.sh --uninstall [--purge-pods] [--root DIR]
#
# --root (or DESTDIR) installs under a prefix, for packaging and tests;
# systemctl is then never run. Run as root otherwise.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
binary=$here/../bin/daemonlet
server=""
token=""
token_file=""
server_too=false
uninstall=false
purge_pods=false

usage() {
	sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary) binary=$2; shift 2 ;;
	--root) root=$2; shift 2 ;;
	--server) server=$2; shift 2 ;;
	--token) token=$2; shift 2 ;;
	--token-file) token_file=$2; shift 2 ;;
	--server-too) server_too=true; shift ;;
	--uninstall) uninstall=true; shift ;;
	--purge-pods) purge_pods=true; shift ;;
	-h | --help) usage ;;
	*) echo "install.sh: unknown argument $1" >&2; usage ;;
	esac
done

bin_dst=$root/usr/local/bin/daemonlet
unit_dir=$root/etc/systemd/system
conf_dir=$root/etc/daemonlet
units="daemonlet-agent.service"
if $server_too; then
	units="$units daemonlet-server.service"
fi

# systemctl runs only on the real root of a machine booted with systemd;
# otherwise the script says what it would have run.
systemctl_() {
	if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl "$@"
	else
		echo "systemd not in use here (or --root given): would run: systemctl $*"
	fi
}

if $uninstall; then
	for u in daemonlet-agent.service daemonlet-server.service; do
		if [ -e "$unit_dir/$u" ]; then
			systemctl_ disable --now "$u"
			rm -f "$unit_dir/$u"
		fi
	done
	systemctl_ daemon-reload
	if $purge_pods; then
		# The agent's root dir holds the pods' state; its containers live in
		# containerd's daemonlet namespace. Remove both.
		if [ -z "$root" ] && command -v ctr >/dev/null 2>&1; then
			ns=daemonlet
			for id in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do
				ctr -n "$ns" tasks kill -s SIGKILL "$id" 2>/dev/null || true
			done
			sleep 1
			for id in $(ctr -n "$ns" containers ls -q 2>/dev/null); do
				ctr -n "$ns" tasks delete -f "$id" 2>/dev/null || true
				ctr -n "$ns" containers delete "$id" 2>/dev/null || true
			done
		else
			echo "would remove every container of containerd namespace daemonlet (ctr -n daemonlet ...)"
		fi
		rm -rf "$root/var/lib/daemonlet"
	else
		echo "daemon pods keep running; run with --purge-pods to remove them"
	fi
	rm -f "$bin_dst" "$conf_dir/agent.yaml" "$conf_dir/token"
	rmdir "$conf_dir" 2>/dev/null || true
	echo "daemonlet uninstalled from ${root:-/}"
	exit 0
fi

if [ ! -x "$binary" ]; then
	echo "install.sh: no executable $binary (run make build, or give --binary)" >&2
	exit 1
fi
install -D -m 0755 "$binary" "$bin_dst"
for u in $units; do
	install -D -m 0644 "$here/systemd/$u" "$unit_dir/$u"
done
install -d -m 0755 "$conf_dir"

# An existing settings file or token is the operator's: never overwritten.
if [ ! -e "$conf_dir/agent.yaml" ]; then
	umask 022
	{
		echo "# daemonlet agent settings (kubelet config file keys); see daemonlet agent --help."
		echo "podManifestPath: /etc/daemonlet/manifests"
		if [ -n "$server" ]; then
			echo "server: [\"$server\"]"
			echo "tokenFile: /etc/daemonlet/token"
		fi
	} >"$conf_dir/agent.yaml"
	install -d -m 0755 "$conf_dir/manifests"
fi
if [ -n "$token_file" ]; then
	token=$(cat "$token_file")
fi
if [ -n "$token" ] && [ ! -e "$conf_dir/token" ]; then
	(umask 077 && printf '%s\n' "$token" >"$conf_dir/token")
fi
if [ -e "$conf_dir/token" ]; then
	chmod 0600 "$conf_dir/token"
fi

systemctl_ daemon-reload
for u in $units; do
	systemctl_ enable --now "$u"
done
echo "daemonlet installed under ${root:-/}: $bin_dst, $conf_dir/agent.yaml, units $units"
