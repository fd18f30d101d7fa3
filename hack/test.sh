#!/bin/sh
# Runs every test: formatting, lints, unit tests and the root-only integration tests.
# The integration tests drive the release binaries (what ships); the test harnesses
# themselves build in the dev profile, so they skip the slow LTO link.
# Needs root (namespaces, mounts, cgroups) and a Debian 12 host.
set -eu
cd "$(dirname "$0")/.."
./hack/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --release --workspace
# Integration tests start many containers and daemons; more threads than this only queue on 2 cores.
cargo test --workspace -- --test-threads="${KURA_TEST_THREADS:-4}"
# Hostile config.json input: a fixed fuzzing budget, any crash fails the run.
./hack/fuzz.sh "${KURA_FUZZ_SECONDS:-60}"
