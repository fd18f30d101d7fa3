#!/bin/sh
# Makes kura-shim available to containerd as the runtime io.containerd.kura.v2:
# a symlink containerd-shim-kura-v2 -> kura-shim in DIR (default /usr/local/bin).
# usage: hack/shim-install.sh [DIR] [KURA_SHIM]
set -eu
dir=${1:-/usr/local/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
shim=${2:-$here/target/release/kura-shim}
[ -x "$shim" ] || { echo "shim-install: $shim not built (cargo build --release -p kura-shim)" >&2; exit 1; }
mkdir -p "$dir"
ln -sf "$(readlink -f "$shim")" "$dir/containerd-shim-kura-v2"
echo "$dir/containerd-shim-kura-v2 -> $(readlink -f "$shim")"
