#!/usr/bin/env bash
# run.sh is `make run`: a whole Meshwork on this machine (scripts/demo): a coord, a workmachine
# and a laptop in network namespaces of their own, joined in one mesh, with a workspace "dev"
# to ssh into. Ctrl-C (or make stop) tears it down; state stays in $MESHWORK_DIR/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
MESHWORK_DIR=${MESHWORK_DIR:-/var/lib/meshwork}
if ! ctr --address "$MESHWORK_DIR/containerd/containerd.sock" version >/dev/null 2>&1; then
	echo "run: containerd is not up; running scripts/deps.sh first"
	MESHWORK_DIR=$MESHWORK_DIR scripts/deps.sh
fi
exec bin/demo -meshctl bin/meshctl -state "$MESHWORK_DIR/demo" "$@"
