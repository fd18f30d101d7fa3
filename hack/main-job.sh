#!/bin/sh
# The main job on a fresh machine: install dependencies, build, make a busybox bundle
# and run a container in it with kura-runtime.
set -eu
cd "$(dirname "$0")/.."
./hack/install-deps.sh
cargo build --release --workspace
out=hack/out/main-job
rm -rf "$out"
./hack/mkbundle.sh "$out/bundle" sh -c 'echo "hello from kura: $(hostname), pid $$, uid $(id -u)"; cat /proc/self/cgroup | head -3'
exec ./target/release/kura-runtime --root "$PWD/hack/out/state" run --bundle "$out/bundle" "main-job-$$"
