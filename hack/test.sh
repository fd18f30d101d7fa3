#!/bin/sh
# Runs every test: formatting, lints, unit tests and the root-only integration tests
# against the release binaries. Needs root (namespaces, mounts, cgroups).
set -eu
cd "$(dirname "$0")/.."
./hack/install-deps.sh
cargo fmt --all -- --check
cargo build --release --workspace
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests spawn many containers each; more threads than that only queue on 2 cores.
cargo test --release --workspace -- --test-threads="${KURA_TEST_THREADS:-4}"
