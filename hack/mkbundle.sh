#!/bin/sh
# Makes an OCI bundle in DIR: a busybox rootfs and the default config.json of
# `kura-runtime spec`, with process.args replaced by the remaining arguments if given.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: mkbundle.sh DIR [ARGS...]}
shift
runtime=${KURA_RUNTIME:-$here/../target/release/kura-runtime}
mkdir -p "$dir"
"$here/mkrootfs.sh" "$dir/rootfs"
(cd "$dir" && rm -f config.json && "$runtime" spec)
if [ $# -gt 0 ]; then
	args=$(printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')
	python3 - "$dir/config.json" "$args" <<'PY'
import json, sys
p, args = sys.argv[1], json.loads(sys.argv[2])
c = json.load(open(p))
c["process"]["args"] = args
c["process"]["terminal"] = False
json.dump(c, open(p, "w"), indent=2)
PY
fi
