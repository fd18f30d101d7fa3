#!/bin/bash
# Benchmark: `kura run --rm IMAGE true` against `ctr run --rm` (Debian's containerd 1.6
# with runc) and `podman run --rm` (Debian's podman 4.3, with runc), in the same run, each
# on its own private root, the same busybox image loaded into each beforehand. All three
# without a network (kura gets `--network none`, an empty netns; ctr has none; podman gets
# `--network none`): this measures the container path, not CNI. Then memory: the idle
# shim's RSS, and kurad plus N idle containers' shims (Pss, so shared pages count once).
#
#   usage: hack/bench/run.sh     (as root; RUNS=30 IDLE=100 KURA_BIN_DIR=target/release)
#   the builds that ship (static shim and runtime, see README):
#   KURA_SHIM=$(hack/shim-build-static.sh) KURA_RUNTIME=$(hack/runtime-build-static.sh) hack/bench/run.sh
#
# Reports medians (hyperfine) and ratios to containerd; numbers only, never asserted.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-30}
idle=${IDLE:-100}
bindir=${KURA_BIN_DIR:-$here/target/release}
out=${BENCH_DIR:-$here/hack/out/bench-run}
for t in containerd ctr podman hyperfine python3 jq; do
	command -v $t >/dev/null || { echo "run.sh: $t not installed (hack/install-deps.sh)" >&2; exit 1; }
done
[ -x "$bindir/kurad" ] || { echo "run.sh: $bindir/kurad not built (cargo build --release)" >&2; exit 1; }
pids=()
rm_mounts() {
	for m in $(awk -v d="$out/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
}
rm_mounts
rm -rf "$out"
# A run right after another measured the first one's teardown (100 containers' cgroups
# freed by kernel workers, unmounts, writeback) along with itself: let it settle.
sync
sleep "${SETTLE:-10}"
mkdir -p "$out/kura" "$out/containerd" "$out/podman" "$out/bin"
# kurad runs the shim and the runtime found next to it: copies, so both can be the
# static builds.
cp "$bindir/kurad" "$bindir/kura" "$out/bin/"
cp "${KURA_SHIM:-$bindir/kura-shim}" "$out/bin/kura-shim"
cp "${KURA_RUNTIME:-$bindir/kura-runtime}" "$out/bin/kura-runtime"
bindir="$out/bin"
kura="$bindir/kura --address $out/kura/kura.sock -n bench"
ctr="ctr --address $out/containerd/containerd.sock -n bench"
# podman: runc, because its default crun refuses hybrid-cgroup hosts; explicit ulimits,
# because its defaults raise RLIMIT_NOFILE/NPROC, which root without CAP_SYS_RESOURCE
# (this host) may not do.
podman="podman --root $out/podman/root --runroot $out/podman/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend none --runtime runc"
prun="run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
cleanup() {
	set +e
	if [ -S "$out/kura/kura.sock" ]; then
		for c in $($kura ps -a -q 2>/dev/null); do $kura rm -f "$c" >/dev/null 2>&1; done
	fi
	$podman rm -a -f >/dev/null 2>&1
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm_mounts
}
trap cleanup EXIT

# One busybox image, as an OCI archive every tool can load.
python3 "$here/hack/images/mkimage.py" busybox "$out/image" --tag v1 >/dev/null
tar -C "$out/image" -cf "$out/image.tar" .
image_ref=docker.io/bench/busybox:v1

echo 'log_level = "warn"' >"$out/kura/config.toml"
"$bindir/kurad" --address "$out/kura/kura.sock" --root "$out/kura/root" --state "$out/kura/state" \
	--config "$out/kura/config.toml" >"$out/kura/kurad.log" 2>&1 &
kpid=$!
pids+=($kpid)
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
pids+=($!)
for _ in $(seq 100); do [ -S "$out/kura/kura.sock" ] && [ -S "$out/containerd/containerd.sock" ] && break; sleep 0.1; done

$kura load -i "$out/image.tar" --name "$image_ref" >/dev/null
kimg=$($kura images -q | head -1)
$ctr images import --base-name docker.io/bench/busybox --digests "$out/image.tar" >/dev/null
cimg=$($ctr images ls -q | grep -v '^sha256' | head -1)
$podman load -q -i "$out/image.tar" >/dev/null
pimg=$($podman images -q | head -1)
echo "images: kura=$kimg containerd=$cimg podman=$pimg" >&2

# Each tool runs once before timing (warm caches, snapshot of the image unpacked).
$kura run --rm --network none "$kimg" true
$ctr run --rm "$cimg" warm true
$podman $prun "$pimg" true
hyperfine --warmup 3 --runs "$runs" --export-json "$out/result.json" --style basic \
	-n kura "$kura run --rm --network none $kimg true" \
	-n containerd "$ctr run --rm $cimg bench-ctr true" \
	-n podman "$podman $prun $pimg true" >&2

# Memory: N idle containers under kurad, each with its shim.
pss() { awk '/^Pss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
kurad_before=$(pss $kpid)
for i in $(seq "$idle"); do
	$kura run -d --network none --name "idle-$i" "$kimg" sleep 3600 >/dev/null
done
sleep 1
shims=$(pgrep -f "kura-shim.*-id idle-" || true)
nshims=$(echo "$shims" | grep -c . || true)
shim_pss=0
shim_rss=0
for p in $shims; do
	shim_pss=$((shim_pss + $(pss "$p")))
	shim_rss=$((shim_rss + $(rss "$p")))
done
kurad_after=$(pss $kpid)

python3 - "$out/result.json" "$runs" "$idle" "$nshims" "$shim_rss" "$shim_pss" "$kurad_before" "$kurad_after" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
runs, idle, n, srss, spss, kb, ka = sys.argv[2:9]
n, srss, spss, kb, ka = int(n), int(srss), int(spss), int(kb), int(ka)
c = r["containerd"]["median"]
print(f"`run --rm IMAGE true`, median of {runs} (ms), ratio to containerd:")
for name in ("kura", "containerd", "podman"):
    m = r[name]["median"]
    print(f"  {name:11} {m * 1000:8.1f}   {m / c:5.2f}x")
if n:
    print(f"{n} idle containers: shim VmRSS avg {srss / n / 1024:.2f} MiB, Pss avg {spss / n / 1024:.2f} MiB;"
          f" kurad Pss {kb / 1024:.1f} -> {ka / 1024:.1f} MiB; kurad + shims Pss {(ka + spss) / 1024:.1f} MiB")
else:
    print(f"no shims found for {idle} idle containers")
PY
