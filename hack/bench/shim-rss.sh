#!/bin/sh
# Memory of idle shims: N containers (`sleep`) through containerd with kura-shim
# (io.containerd.kura.v2) and with containerd's runc shim (io.containerd.runc.v2),
# then VmRSS and Pss (smaps_rollup) of each shim after they settle.
# By default it measures the shim as shipped, built by hack/shim-build-static.sh;
# SHIM=path measures another build (e.g. target/release/kura-shim, the dynamic one).
# kura-runtime is not needed: the containers run `sleep`, through kura-runtime found
# next to the shim or on PATH (KURA_SHIM_RUNTIME=runc to use runc).
# usage: hack/bench/shim-rss.sh [N]   (needs root, containerd, runc)
set -eu
n=${1:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
shim=${SHIM:-$("$here/shim-build-static.sh")}
case $shim in /*) ;; *) shim=$here/../$shim ;; esac
[ -x "$shim" ] || { echo "no $shim" >&2; exit 1; }
rt_dir=$(dirname "$(readlink -f "$here/../target/release/kura-runtime" 2>/dev/null || echo /nonexistent)")
d=$(mktemp -d /tmp/kura-shim-rss.XXXXXX)
ns=shimrss
cleanup() {
	for id in $(ctr -a "$d/c.sock" -n $ns task ls -q 2>/dev/null); do
		ctr -a "$d/c.sock" -n $ns task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
	done
	sleep 1
	for id in $(ctr -a "$d/c.sock" -n $ns task ls -q 2>/dev/null); do
		ctr -a "$d/c.sock" -n $ns task delete -f "$id" >/dev/null 2>&1 || true
	done
	for id in $(ctr -a "$d/c.sock" -n $ns c ls -q 2>/dev/null); do
		ctr -a "$d/c.sock" -n $ns c rm "$id" >/dev/null 2>&1 || true
	done
	[ -f "$d/pid" ] && kill "$(cat "$d/pid")" 2>/dev/null || true
	sleep 0.5
	grep -o " $d[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$d"
	for c in /sys/fs/cgroup/*/$ns /sys/fs/cgroup/$ns; do [ -d "$c" ] && rmdir "$c"/* "$c" 2>/dev/null || true; done
}
trap cleanup EXIT
mkdir -p "$d/bin"
ln -s "$(readlink -f "$shim")" "$d/bin/containerd-shim-kura-v2"
# The shim looks for kura-runtime next to itself, then on PATH.
[ -x "$rt_dir/kura-runtime" ] && ln -s "$rt_dir/kura-runtime" "$d/bin/kura-runtime"
command -v kura-runtime >/dev/null || [ -e "$d/bin/kura-runtime" ] || export KURA_SHIM_RUNTIME=${KURA_SHIM_RUNTIME:-runc}
cat >"$d/config.toml" <<T
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
T
PATH=$d/bin:$PATH KURA_SHIM_RUN_DIR=$d/run containerd --config "$d/config.toml" >"$d/log" 2>&1 &
echo $! >"$d/pid"
for _ in $(seq 100); do [ -S "$d/c.sock" ] && break; sleep 0.1; done
"$here/shim-image.sh" "$d/bb.tar" docker.io/kura/busybox:test
ctr -a "$d/c.sock" -n $ns image import "$d/bb.tar" >/dev/null
measure() { # RUNTIME LABEL
	for i in $(seq "$n"); do
		PATH=$d/bin:$PATH ctr -a "$d/c.sock" -n $ns run -d --runtime "$1" docker.io/kura/busybox:test "$2-$i" sleep 3600
	done
	sleep 3
	rss=0 pss=0 cnt=0
	for i in $(seq "$n"); do
		# The shim is the parent of the container's init.
		t=$(ctr -a "$d/c.sock" -n $ns task ls | awk -v id="$2-$i" '$1 == id {print $2}')
		p=$(awk '/^PPid/{print $2}' "/proc/$t/status" 2>/dev/null || true)
		[ -n "$p" ] || continue
		r=$(awk '/^VmRSS/{print $2}' "/proc/$p/status")
		s=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup")
		rss=$((rss + r)) pss=$((pss + s)) cnt=$((cnt + 1))
		[ "$i" = 1 ] && echo "$2 shim pid $p: threads $(awk '/^Threads/{print $2}' /proc/$p/status); $(grep -E '^(RssAnon|RssFile)' /proc/$p/status | tr -s ' \t' ' ' | tr '\n' ' ')"
	done
	[ "$cnt" -gt 0 ] || { echo "$2: no shims found" >&2; return 1; }
	echo "$2: $cnt idle shims, VmRSS avg $((rss / cnt)) KiB, Pss avg $((pss / cnt)) KiB"
}
measure io.containerd.kura.v2 kura
measure io.containerd.runc.v2 runc
