#!/usr/bin/env bash
# Runs daemonlet's demo on this machine, as root: installs the missing
# system packages (scripts/deps.sh), builds daemonlet and democtl, and runs
# `democtl up`, which starts a private containerd, the server and one agent
# under one directory (default /var/tmp/daemonlet-demo), applies the
# examples of deploy/examples and prints where everything is. Arguments go
# to democtl (see `go run ./scripts/democtl up -h`). scripts/demo-down.sh
# removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (it starts containerd and configures networks)" >&2
	exit 1
fi
./scripts/deps.sh
"$GO" build -o bin/daemonlet ./cmd/daemonlet
"$GO" build -o bin/democtl ./scripts/democtl
exec bin/democtl up "$@"
