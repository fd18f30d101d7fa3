#!/bin/bash
# Benchmark: what a bridge network adds to a container's start. `kura run --rm IMAGE
# true` on the default bridge network (CNI bridge + host-local, portmap, firewall,
# loopback) against `--network none`, and the same pair for `podman run --rm` (Debian's
# podman 4.3, CNI backend, runc) in the same run, each on its own private root with the
# same busybox image. Podman gets a containers.conf of its own (a CNI config dir in
# $out, default subnet 10.77.0.0/16) so it neither reads nor writes the host's
# /etc/cni/net.d nor shares 10.88.0.0/16 with kura0.
#
#   usage: hack/bench/network.sh     (as root; RUNS=30 KURA_BIN_DIR=target/release)
#
# Reports medians (hyperfine), the bridge's cost (bridge - none) for each, and kura's
# cost as a fraction of podman's; numbers only, never asserted.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-30}
bindir=${KURA_BIN_DIR:-$here/target/release}
out=${BENCH_DIR:-$here/hack/out/bench-network}
for t in podman hyperfine python3; do
	command -v $t >/dev/null || { echo "network.sh: $t not installed (hack/install-deps.sh)" >&2; exit 1; }
done
[ -x "$bindir/kurad" ] || { echo "network.sh: $bindir/kurad not built (cargo build --release)" >&2; exit 1; }
pids=()
# podman's default bridge: ours to remove afterwards only if this run made it.
podman_bridge_before=$(test -e /sys/class/net/cni-podman0 && echo yes || echo no)
rm_mounts() {
	for m in $(awk -v d="$out/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
}
rm_mounts
rm -rf "$out"
mkdir -p "$out/kura" "$out/podman/cni" "$out/bin"
cp "$bindir/kurad" "$bindir/kura" "$bindir/kura-shim" "$bindir/kura-runtime" "$out/bin/"
bindir="$out/bin"
kura="$bindir/kura --address $out/kura/kura.sock -n bench"
cat >"$out/podman/containers.conf" <<CONF
[network]
network_backend = "cni"
network_config_dir = "$out/podman/cni"
cni_plugin_dirs = ["/usr/lib/cni"]
default_subnet = "10.77.0.0/16"
CONF
export CONTAINERS_CONF="$out/podman/containers.conf"
# runc and explicit ulimits: see run.sh.
podman="podman --root $out/podman/root --runroot $out/podman/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend none --runtime runc"
prun="run --rm --ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
cleanup() {
	set +e
	if [ -S "$out/kura/kura.sock" ]; then
		for c in $($kura ps -a -q 2>/dev/null); do $kura rm -f "$c" >/dev/null 2>&1; done
	fi
	$podman rm -a -f >/dev/null 2>&1
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm_mounts
	if [ "$podman_bridge_before" = no ]; then ip link delete cni-podman0 2>/dev/null; fi
}
trap cleanup EXIT

python3 "$here/hack/images/mkimage.py" busybox "$out/image" --tag v1 >/dev/null
tar -C "$out/image" -cf "$out/image.tar" .

echo 'log_level = "warn"' >"$out/kura/config.toml"
"$bindir/kurad" --address "$out/kura/kura.sock" --root "$out/kura/root" --state "$out/kura/state" \
	--config "$out/kura/config.toml" >"$out/kura/kurad.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$out/kura/kura.sock" ] && break; sleep 0.1; done
$kura load -i "$out/image.tar" --name docker.io/bench/busybox:v1 >/dev/null
kimg=$($kura images -q | head -1)
$podman load -q -i "$out/image.tar" >/dev/null
pimg=$($podman images -q | head -1)

# Once each before timing: bridges made, chains in place, snapshots unpacked.
$kura run --rm "$kimg" true
$kura run --rm --network none "$kimg" true
$podman $prun --network bridge "$pimg" true
$podman $prun --network none "$pimg" true
hyperfine --warmup 3 --runs "$runs" --export-json "$out/result.json" --style basic \
	-n kura-none "$kura run --rm --network none $kimg true" \
	-n kura-bridge "$kura run --rm $kimg true" \
	-n podman-none "$podman $prun --network none $pimg true" \
	-n podman-bridge "$podman $prun --network bridge $pimg true" >&2

python3 - "$out/result.json" "$runs" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
print(f"`run --rm IMAGE true`, median of {sys.argv[2]} (ms):")
for n in ("kura-none", "kura-bridge", "podman-none", "podman-bridge"):
    print(f"  {n:14} {r[n]:8.1f}")
k = r["kura-bridge"] - r["kura-none"]
p = r["podman-bridge"] - r["podman-none"]
print(f"bridge network adds: kura {k:.1f} ms, podman {p:.1f} ms; kura's is {k / p:.2f}x podman's (target <= 0.5)")
PY
