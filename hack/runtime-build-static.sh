#!/bin/sh
# Builds kura-runtime to ship: statically linked (glibc static-pie), opt-level s.
# Every container start runs the runtime several times (create, start, delete,
# exec), so what it maps is paid on each: linked dynamically, ld.so has to load and
# relocate libc and the process maps libc.so's pages (peak RSS ~5.2 MB); static, the
# loader step is gone and only the libc it uses is mapped (~3.9 MB). Its hot path is
# syscalls, which the smaller code does not slow (hack/bench/runtime.py shows both).
# The explicit --target keeps crt-static off build scripts and proc-macros, which
# cannot be static; its own target directory keeps the shim's opt-level-z build
# (hack/shim-build-static.sh) from rebuilding it.
# usage: hack/runtime-build-static.sh   -> prints the binary's path
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
dir="${CARGO_TARGET_DIR:-target}/static-runtime"
CARGO_PROFILE_RELEASE_OPT_LEVEL=s RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
	cargo build --release -p kura-runtime --target "$triple" --target-dir "$dir" >&2
echo "$dir/$triple/release/kura-runtime"
