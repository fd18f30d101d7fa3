#!/bin/sh
# The main job on a fresh machine: install dependencies, build, start kurad with its
# defaults (socket /run/kura/kura.sock, root /var/lib/kura), load a busybox test image
# built from Debian's busybox-static, and run a container in it with `kura run`.
# A kurad already serving the default socket is used as it is, and left running.
set -eu
cd "$(dirname "$0")/.."
./hack/install-deps.sh
cargo build --release --workspace
bin="$PWD/target/release"
out="$PWD/hack/out/main-job"
rm -rf "$out"
mkdir -p "$out"

started=""
if ! "$bin/kura" version >/dev/null 2>&1; then
	"$bin/kurad" >"$out/kurad.log" 2>&1 &
	started=$!
	i=0
	until "$bin/kura" version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -gt 100 ] || ! kill -0 "$started" 2>/dev/null; then
			echo "main-job: kurad did not start; its log:" >&2
			cat "$out/kurad.log" >&2
			exit 1
		fi
		sleep 0.1
	done
fi
stop_kurad() {
	if [ -n "$started" ]; then
		kill -TERM "$started" 2>/dev/null || true
		wait "$started" 2>/dev/null || true
	fi
}
trap stop_kurad EXIT

python3 hack/images/mkimage.py busybox "$out/image" --tag latest
tar -C "$out/image" -cf "$out/busybox.tar" .
"$bin/kura" load -i "$out/busybox.tar" --name docker.io/kura/busybox:latest
"$bin/kura" run --rm --name "main-job-$$" kura/busybox sh -c \
	'echo "hello from kura: $(hostname), pid $$, uid $(id -u)"; head -3 /proc/self/cgroup'
