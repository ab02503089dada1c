#!/usr/bin/env bash
# Removes what scripts/demo.sh started: pods, containers, the private
# containerd, mounts, the bridge, the daemons (by pid) and the demo
# directory. Give the same -dir as to demo.sh if it was not the default.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

if [ ! -x bin/democtl ]; then
	"$GO" build -o bin/democtl ./scripts/democtl
fi
exec bin/democtl down "$@"
