#!/usr/bin/env bash
# Candidate for ../shared/bench/run.sh: writes a Palisade config for the
# harness's ports into the run's scratch dir and runs the proxy in the
# foreground (run.sh stops it by process group).
#   palisade-candidate.sh BINARY LISTEN_PORT BACKEND_PORT RUN_DIR
# Knobs: PALISADE_WORKERS, PALISADE_CACHE=1 (serve from the cache),
# PALISADE_COMPRESSION=1 (compress).
set -euo pipefail
bin=$1 listen=$2 backend=$3 run=$4
dir=$run/candidate-palisade
mkdir -p "$dir"
cat > "$dir/palisade.toml" <<CONF
[server]
listen = ["127.0.0.1:$listen"]
admin_listen = "off"
workers = ${PALISADE_WORKERS:-0}

[server.limits]
max_connections = 4096

[[upstreams]]
name = "backend"
servers = ["127.0.0.1:$backend"]
max_idle_per_server = 256

[[routes]]
upstream = "backend"

[log]
access = "off"
level = "warn"
CONF
# PALISADE_CACHE=1: rows x1/x64 become cache hits (compare with nginx's c1/c64).
if [[ ${PALISADE_CACHE:-0} == 1 ]]; then
    printf '\n[cache]\nmax_size = "256MiB"\ndefault_ttl = "10m"\n' >> "$dir/palisade.toml"
fi
# PALISADE_COMPRESSION=1: [compression] with its defaults (row xf; with
# PALISADE_CACHE=1 the encoded body comes from the cache).
if [[ ${PALISADE_COMPRESSION:-0} == 1 ]]; then
    printf '\n[compression]\n' >> "$dir/palisade.toml"
fi
exec "$bin" run -c "$dir/palisade.toml"
