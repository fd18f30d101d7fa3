#!/bin/sh
# Builds a busybox OCI image archive (for `ctr image import`) from hack/mkrootfs.sh's
# rootfs: one uncompressed layer, an OCI image layout tarred up. No network needed.
# usage: shim-image.sh OUT.tar [NAME]   (NAME default docker.io/kura/busybox:test)
set -eu
out=${1:?usage: shim-image.sh OUT.tar [NAME]}
name=${2:-docker.io/kura/busybox:test}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/mkrootfs.sh" "$work/rootfs" >/dev/null
mkdir -p "$work/layout/blobs/sha256"
# Deterministic layer: sorted names, fixed owner and mtime.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 \
	-C "$work/rootfs" -cf "$work/layer.tar" .
blob() { # FILE -> prints "sha256hex size", moves FILE into blobs/
	d=$(sha256sum "$1" | cut -d' ' -f1)
	s=$(stat -c %s "$1")
	mv "$1" "$work/layout/blobs/sha256/$d"
	echo "$d $s"
}
set -- $(blob "$work/layer.tar")
layer=$1 layer_size=$2
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hack/shim-image.sh"}]}' \
	"$layer" >"$work/config.json"
set -- $(blob "$work/config.json")
config=$1 config_size=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
	"$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
set -- $(blob "$work/manifest.json")
manifest=$1 manifest_size=$2
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$manifest" "$manifest_size" "$name" "${name##*:}" >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
tar -C "$work/layout" -cf "$out" oci-layout index.json blobs
