#!/usr/bin/env bash
# lab-clean.sh removes what a killed test run left behind: lab network namespaces (named mwl-…)
# and the processes still running inside them. Safe to run at any time; touches nothing else.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "lab-clean: run as root" >&2; exit 1; }
n=0
for ns in $(ip netns list | awk '{print $1}' | grep '^mwl-' || true); do
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
	ip netns del "$ns" && n=$((n + 1))
done
echo "lab-clean: removed $n namespaces"

# Workspace tests run their containers in containerd namespace meshwork-test; a killed run
# leaves them (and their mw- network namespaces, named in the meshwork.netns label) behind.
CTR="ctr --address ${MESHWORK_DIR:-/var/lib/meshwork}/containerd/containerd.sock -n meshwork-test"
c=0
if $CTR version >/dev/null 2>&1; then
	for id in $($CTR containers ls -q 2>/dev/null || true); do
		netns=$($CTR containers info "$id" 2>/dev/null | sed -n 's/.*"meshwork.netns": "\(mw-[0-9a-f]*\)".*/\1/p' | head -n1)
		$CTR tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		sleep 0.2
		$CTR tasks rm -f "$id" >/dev/null 2>&1 || true
		$CTR containers rm "$id" >/dev/null 2>&1 && c=$((c + 1))
		[ -n "$netns" ] && ip netns del "$netns" 2>/dev/null || true
	done
fi
echo "lab-clean: removed $c test workspace containers"
