#!/bin/sh
# Starts Debian's docker-registry on 127.0.0.1:PORT storing into DIR, in the foreground
# (exec), with htpasswd basic auth when HTPASSWD names a file (make one with
# `htpasswd -Bbc FILE user password`). For benchmarks and manual tests; the integration
# tests start their own registries from Rust the same way.
#   usage: registry.sh DIR PORT [HTPASSWD]
set -eu
dir=${1:?usage: registry.sh DIR PORT [HTPASSWD]}
port=${2:?usage: registry.sh DIR PORT [HTPASSWD]}
htpasswd=${3:-}
command -v docker-registry >/dev/null || { echo "registry.sh: docker-registry not installed (apt-get install docker-registry)" >&2; exit 1; }
mkdir -p "$dir/data"
cfg="$dir/config.yml"
cat >"$cfg" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: kura-local-registry
CFG
if [ -n "$htpasswd" ]; then
	cat >>"$cfg" <<CFG
auth:
  htpasswd:
    realm: kura
    path: $htpasswd
CFG
fi
exec docker-registry serve "$cfg"
