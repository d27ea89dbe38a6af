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
