#!/bin/sh
# Builds a minimal busybox root filesystem in DIR from Debian's busybox-static.
# Used by the main job, the integration tests and the benchmarks, so they all run the same rootfs.
set -eu
dir=${1:?usage: mkrootfs.sh DIR}
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "mkrootfs: $bb not found (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$dir/bin" "$dir/etc" "$dir/dev" "$dir/proc" "$dir/sys" "$dir/tmp" "$dir/root" "$dir/usr/bin" "$dir/sbin" "$dir/usr/sbin"
chmod 1777 "$dir/tmp"
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list); do
	[ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
cat >"$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$dir/etc/group" <<'G'
root:x:0:
daemon:x:1:
wheel:x:10:root
nogroup:x:65534:
G
