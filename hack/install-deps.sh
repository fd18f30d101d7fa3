#!/bin/sh
# Installs everything kura's build, tests and benchmarks need on a fresh Debian 12 host.
# Idempotent: packages already present are skipped quickly.
set -eu
pkgs="busybox-static runc crun docker-registry containernetworking-plugins protobuf-compiler
umoci skopeo apache2-utils iptables iproute2 hyperfine strace python3 jq containerd podman zstd openssl time"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
fi
# The docker-registry package starts a system registry on :5000; tests start their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found (install Rust with rustup)" >&2; exit 1; }
