#!/bin/sh
# Builds the kura-shim to ship: statically linked (glibc static-pie) and optimized for
# size. A shim runs once per container and is mostly idle, so what it maps is paid per
# container: linked statically it maps only the part of libc it uses instead of all of
# libc.so, and at opt-level z its code is a quarter smaller. Idle VmRSS with one
# container: ~1.8 MiB, against ~3.1 MiB for the workspace's dynamic opt-level-3 build
# (hack/bench/shim-rss.sh). The shim's hot paths are syscalls (pipe copies, waitpid),
# which the smaller code does not slow.
# The explicit --target keeps crt-static off build scripts and proc-macros, which
# cannot be static; it also gives the build its own directory under target/.
# usage: hack/shim-build-static.sh   -> prints the binary's path
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
CARGO_PROFILE_RELEASE_OPT_LEVEL=z RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
	cargo build --release -p kura-shim --target "$triple" >&2
echo "${CARGO_TARGET_DIR:-target}/$triple/release/kura-shim"
