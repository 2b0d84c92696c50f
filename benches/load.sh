#!/usr/bin/env bash
# Side-by-side load benchmark: Palisade against nginx (plain reverse proxy) on
# loopback, through ../shared/bench/run.sh, plus Palisade's RSS idle and under
# load. Needs: nginx libnginx-mod-http-modsecurity wrk (see ../shared/bench).
#   cargo build --release && benches/load.sh
# Knobs: BENCH_DIR (default ../shared/bench), PALISADE_BIN, and run.sh's own
# (ROWS, CANDIDATE_ROWS, REPS, DURATION, NICE, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
bin=${PALISADE_BIN:-$root/target/release/palisade}
[[ -x $bin ]] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
[[ -x $bench/run.sh ]] || { echo "no $bench/run.sh (set BENCH_DIR)" >&2; exit 1; }

# The RSS probe: samples the candidate's RSS once idle and every second of load.
rss_log=$(mktemp)
export PALISADE_RSS_LOG=$rss_log

export ROWS=${ROWS:-"b1 b64"}
export CANDIDATE_ROWS=${CANDIDATE_ROWS:-"x1 x64"}
export ATTACKS=${ATTACKS:-0}
export CANDIDATE_NAME=palisade
export CANDIDATE_CMD="$here/palisade-candidate.sh $bin {listen} {backend} {run}"
(
    # Wait for the candidate to start, note its idle RSS, then sample.
    for _ in $(seq 1 600); do
        pid=$(pgrep -f "$bin run -c" | head -1 || true)
        [[ -n $pid ]] && break
        sleep 0.5
    done
    [[ -n ${pid:-} ]] || exit 0
    sleep 1
    echo "idle $(awk '/VmRSS/{print $2}' /proc/$pid/status)" >> "$rss_log"
    while kill -0 "$pid" 2>/dev/null; do
        echo "load $(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)" >> "$rss_log"
        sleep 1
    done
) &
sampler=$!
"$bench/run.sh" "$@"
wait "$sampler" 2>/dev/null || true
awk '$1=="idle"{idle=$2} $1=="load" && $2>max{max=$2} END{printf "palisade RSS: idle %.1f MiB, peak under load %.1f MiB\n", idle/1024, max/1024}' "$rss_log"
rm -f "$rss_log"
