#!/bin/sh
# Builds kura-shim linked statically (glibc static-pie). A shim runs once per container
# and is mostly idle, so what it maps counts: statically linked, it maps only the part
# of libc it uses instead of all of libc.so (idle VmRSS ~2.2 MiB instead of ~3.1 MiB,
# see hack/bench/shim-rss.sh). The explicit --target keeps the flag off build scripts
# and proc-macros, which cannot be static.
# usage: hack/shim-build-static.sh   -> prints the binary's path
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
	cargo build --release -p kura-shim --target "$triple" >&2
echo "${CARGO_TARGET_DIR:-target}/$triple/release/kura-shim"
