#!/bin/bash
# Benchmark: pull + unpack of a ~500 MB multi-layer image from a local docker-registry,
# kura (kurad, overlayfs) against containerd 1.6 (`ctr pull`, Debian's package, overlayfs)
# in the same run, each on its own private root. Reports the median of RUNS pulls, the
# ratio, and peak RSS (VmHWM) of kurad and of containerd (+ ctr, which fetches in the client).
#
#   usage: hack/bench/pull.sh            (as root; RUNS=5 SIZE_MB=500 KURA_BIN_DIR=...)
#
# Each timed pull starts from an empty store (the image and everything it holds removed
# and collected before it); the registry's files are in the page cache for both.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-5}
size=${SIZE_MB:-500}
bindir=${KURA_BIN_DIR:-$here/target/release}
out=${BENCH_DIR:-$here/hack/out/bench-pull}
for t in docker-registry skopeo containerd ctr hyperfine python3 jq; do
	command -v $t >/dev/null || { echo "pull.sh: $t not installed (hack/install-deps.sh)" >&2; exit 1; }
done
[ -x "$bindir/kurad" ] || { echo "pull.sh: $bindir/kurad not built (cargo build --release)" >&2; exit 1; }
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for m in $(awk -v d="$out/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

# The image: busybox plus five layers of mostly random data (gzip), built once.
if [ ! -f "$out/image-$size/index.json" ]; then
	rm -rf "$out/image-$size"
	echo "building a ${size} MiB test image..." >&2
	python3 "$here/hack/images/mkimage.py" big "$out/image-$size" --size-mb "$size"
fi
rm -rf "$out/registry" "$out/kura" "$out/containerd"
"$here/hack/registry.sh" "$out/registry" "$port" >"$out/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
image=127.0.0.1:$port/bench/big:v1
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$out/image-$size:latest" "docker://$image"
compressed=$(du -sb "$out/registry/data" | cut -f1)

# kurad
mkdir -p "$out/kura"
echo 'log_level = "warn"' >"$out/kura/config.toml"
"$bindir/kurad" --address "$out/kura/kura.sock" --root "$out/kura/root" --state "$out/kura/state" \
	--config "$out/kura/config.toml" >"$out/kura/kurad.log" 2>&1 &
kpid=$!
pids+=($kpid)
# containerd, its own root/state/socket, no CRI.
mkdir -p "$out/containerd"
cat >"$out/containerd/config.toml" <<CFG
version = 2
root = "$out/containerd/root"
state = "$out/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$out/containerd/containerd.sock"
[ttrpc]
  address = "$out/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
CFG
containerd --config "$out/containerd/config.toml" >"$out/containerd/containerd.log" 2>&1 &
cpid=$!
pids+=($cpid)
for _ in $(seq 100); do [ -S "$out/kura/kura.sock" ] && [ -S "$out/containerd/containerd.sock" ] && break; sleep 0.1; done

kura="$bindir/kura --address $out/kura/kura.sock -n bench"
ctr="ctr --address $out/containerd/containerd.sock -n bench"
hyperfine --runs "$runs" --export-json "$out/result.json" --style basic \
	--prepare "$kura rmi --ignore-missing -q $image >/dev/null; $kura prune -q" \
	-n kura "$kura pull -q $image" \
	--prepare "$ctr images rm --sync $image >/dev/null 2>&1 || true; $ctr content prune references >/dev/null 2>&1 || true" \
	-n containerd "$ctr images pull --plain-http $image >/dev/null"

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
k_rss=$(hwm $kpid)
c_rss=$(hwm $cpid)
# One more ctr pull under /usr/bin/time for the client's peak RSS (it fetches the layers).
$ctr images rm --sync $image >/dev/null 2>&1 || true
ctr_rss=$( { /usr/bin/time -f '%M' $ctr images pull --plain-http $image >/dev/null; } 2>&1 | tail -1 ) || ctr_rss="?"
python3 - "$out/result.json" "$compressed" "$k_rss" "$c_rss" "$ctr_rss" "$runs" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
k, c = r["kura"]["median"], r["containerd"]["median"]
mib = int(sys.argv[2]) / 2**20
print(f"image: {mib:.0f} MiB in the registry (compressed), {sys.argv[6]} runs each")
print(f"kura pull:       median {k:.2f} s  (min {r['kura']['min']:.2f}, max {r['kura']['max']:.2f})")
print(f"containerd pull: median {c:.2f} s  (min {r['containerd']['min']:.2f}, max {r['containerd']['max']:.2f})")
print(f"ratio containerd/kura: {c / k:.2f}x")
print(f"peak RSS kurad: {int(sys.argv[3]) / 1024:.1f} MiB; containerd: {int(sys.argv[4]) / 1024:.1f} MiB; ctr client: " +
      (f"{int(sys.argv[5]) / 1024:.1f} MiB" if sys.argv[5].isdigit() else "?"))
PY
