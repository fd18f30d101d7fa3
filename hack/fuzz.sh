#!/bin/sh
# Fuzzes config.json parsing and validation for a fixed time (seconds, default 60).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -eu
cd "$(dirname "$0")/../runtime"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
# A private corpus copy: the seed corpus in git stays small.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp fuzz/corpus/config/* "$work/"
cargo fuzz run --sanitizer none config "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
