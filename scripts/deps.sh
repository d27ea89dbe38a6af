#!/usr/bin/env bash
# deps.sh installs what Meshwork needs from Debian and starts the project's own containerd.
#
# Idempotent: run it as often as you like. As root (CI is root); it says what it did.
#
#   MESHWORK_DIR   project-owned state (default /var/lib/meshwork): containerd's root,
#                  state, socket, config and log live under $MESHWORK_DIR/containerd.
set -euo pipefail

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/deps.sh): it installs packages and starts containerd"

MESHWORK_DIR=${MESHWORK_DIR:-/var/lib/meshwork}
CTRD_DIR=$MESHWORK_DIR/containerd
CTRD_SOCK=$CTRD_DIR/containerd.sock

# Debian packages, by the command or file that proves each is there.
declare -A want=(
	[containerd]=/usr/bin/containerd
	[runc]=/usr/sbin/runc
	[iproute2]=/usr/sbin/ip
	[nftables]=/usr/sbin/nft
	[openssh-client]=/usr/bin/ssh
	[openssh-server]=/usr/sbin/sshd
	[iperf3]=/usr/bin/iperf3
	[wireguard-tools]=/usr/bin/wg
	[busybox-static]=/bin/busybox
	[tmux]=/usr/bin/tmux
	[socat]=/usr/bin/socat
	[ca-certificates]=/etc/ssl/certs/ca-certificates.crt
	[curl]=/usr/bin/curl
	[redis-server]=/usr/bin/redis-server # packed into images by the environment tests
	[redis-tools]=/usr/bin/redis-cli
	[docker.io]=/usr/sbin/dockerd # the environments bench's baseline: Docker Compose, same images
	[docker-compose]=/usr/bin/docker-compose
)
# quiet_service stops and disables the system service a package just installed and started
# (and its socket unit, which would start it again): tests run their own redis-server on ports
# they choose, a system one would hold 6379; the bench runs its own dockerd, with its own
# data, socket and network namespace.
quiet_service() {
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now --quiet "$1.socket" >/dev/null 2>&1 || true
		systemctl disable --now --quiet "$1" >/dev/null 2>&1 || true
	fi
	if [ -x "/etc/init.d/$1" ]; then
		invoke-rc.d "$1" stop >/dev/null 2>&1 || true
		update-rc.d "$1" disable >/dev/null 2>&1 || true
	fi
	say "$1 installed; its system service is stopped and disabled (tests start their own)"
}

missing=()
for pkg in "${!want[@]}"; do
	[ -e "${want[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps the package from starting a system containerd: we run our own.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [[ " ${missing[*]} " == *" redis-server "* ]]; then
		quiet_service redis-server
	fi
	if [[ " ${missing[*]} " == *" docker.io "* ]]; then
		quiet_service docker
	fi
else
	say "packages present"
fi

# The project's containerd: its own root, state and socket, reused when already up.
if ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
	say "containerd already running at $CTRD_SOCK"
else
	mkdir -p "$CTRD_DIR/root" "$CTRD_DIR/state"
	cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = false
EOF
	rm -f "$CTRD_SOCK" "$CTRD_SOCK.ttrpc"
	say "starting containerd (log: $CTRD_DIR/containerd.log)"
	setsid containerd --config "$CTRD_DIR/config.toml" >>"$CTRD_DIR/containerd.log" 2>&1 </dev/null &
	for _ in $(seq 1 100); do
		ctr --address "$CTRD_SOCK" version >/dev/null 2>&1 && break
		sleep 0.1
	done
	ctr --address "$CTRD_SOCK" version >/dev/null 2>&1 ||
		die "containerd did not come up in 10 s; see $CTRD_DIR/containerd.log"
	say "containerd running at $CTRD_SOCK"
fi

# Lab namespaces need these; a fresh VM has them, a hardened one may not.
modprobe -q br_netfilter 2>/dev/null || true
say "ready"
