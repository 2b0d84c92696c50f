#!/usr/bin/env bash
# Runs the public HTTP cache test suite (cache-tests.fyi; the npm package
# http-cache-tests, pinned) against Palisade: the suite's own origin on
# loopback, Palisade with [cache] in front of it, the suite's client through
# Palisade. Prints the summary the suite's pages would show.
#   benches/cache-tests.sh [PALISADE_BINARY]        (default target/release/palisade)
# MIN_PASS=N: exit 1 when fewer than N tests pass. KEEP=1 keeps the work dir.
# Needs node and npm (the package comes from the npm registry).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${1:-$root/target/release/palisade}
version=${CACHE_TESTS_VERSION:-0.4.5}
origin_port=${ORIGIN_PORT:-28600}
proxy_port=${PROXY_PORT:-28601}
[[ -x $bin ]] || { echo "no $bin: build Palisade first" >&2; exit 1; }
bin=$(realpath "$bin")

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ ${KEEP:-0} == 1 ]] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
npm pack --silent "http-cache-tests@$version" >/dev/null
tar xzf "http-cache-tests-$version.tgz"
cd package
npm install --silent --omit=dev --no-audit --no-fund >/dev/null

npm_config_protocol=http npm_config_port=$origin_port npm_config_pidfile=$work/origin.pid \
    node server/server.mjs >"$work/origin.log" 2>&1 &
pids+=($!)

cat >"$work/palisade.toml" <<CONF
[server]
listen = ["127.0.0.1:$proxy_port"]
admin_listen = "off"
# The suite inspects the origin's own pages and headers.
replace_error_pages = false
hide_headers = []

[[upstreams]]
name = "suite"
servers = ["127.0.0.1:$origin_port"]

[[routes]]
upstream = "suite"

[cache]
max_size = "64MiB"

[log]
access = "off"
level = "error"
CONF
"$bin" run -c "$work/palisade.toml" >"$work/palisade.log" 2>&1 &
pids+=($!)

up=0
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null &&
        (exec 3<>"/dev/tcp/127.0.0.1/$origin_port") 2>/dev/null; then
        up=1
        break
    fi
    sleep 0.1
done
if ((!up)); then
    echo "Palisade or the suite's origin did not come up:" >&2
    cat "$work/palisade.log" "$work/origin.log" >&2
    exit 1
fi

npm_config_base="http://127.0.0.1:$proxy_port" npm_package_config_id="" \
    node --no-warnings cli.mjs >"$work/results.json"
summary=$(node "$here/cache-tests-summary.mjs" "$work/results.json")
echo "cache-tests $version: $summary"
if [[ ${SHOW_BASELINES:-0} == 1 ]]; then
    for r in trafficserver apache squid varnish nginx; do
        echo "  published with $version: $(node "$here/cache-tests-summary.mjs" "results/$r.json")"
    done
fi
passed=${summary#*: }
passed=${passed%% passed*}
if [[ -n ${MIN_PASS:-} ]] && ((passed < MIN_PASS)); then
    echo "fewer than $MIN_PASS cache tests pass" >&2
    exit 1
fi
