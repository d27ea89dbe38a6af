#!/usr/bin/env bash
# run.sh runs Meshwork on this machine: for now its control plane, one coord replica, in the
# foreground (Ctrl-C stops it; the next run reuses its state). The local mesh with a
# workspace to ssh into comes with the mesh and workspace work.
set -euo pipefail
cd "$(dirname "$0")/.."
MESHWORK_DIR=${MESHWORK_DIR:-/var/lib/meshwork}
STATE=$MESHWORK_DIR/coord
KEY=$MESHWORK_DIR/secret.key # apart from the state it protects
HTTP=${MESHWORK_HTTP:-127.0.0.1:8080}

mkdir -p "$MESHWORK_DIR"
if [ ! -f "$KEY" ]; then
	(umask 077 && head -c32 /dev/urandom | base64 >"$KEY")
	echo "run: made the secret key $KEY"
fi
cat <<EOF2
run: starting coord (state in $STATE, admin API on http://$HTTP)

In another terminal, once it says the admin key is written:
  export MESHCTL_COORD=http://$HTTP MESHCTL_TOKEN=\$(cat $STATE/admin.key)
  bin/meshctl cluster status
  bin/meshctl user create alice
  bin/meshctl apikey create --user alice

EOF2
exec bin/meshctl coord --id coord1 --state "$STATE" --http "$HTTP" --cluster 127.0.0.1:7000 --secret-key-file "$KEY"
