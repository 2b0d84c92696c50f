#!/usr/bin/env bash
# Instructions per WAF transaction (CRS, paranoia level 1), counted by
# callgrind: the benign GET and the 16 KiB form POST of benches/waf.rs.
# Counts do not drift with machine load the way timings do, so they show
# what a change to the engine is worth. Needs valgrind.
#   benches/waf-instructions.sh [GET_RUNS] [POST_RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
get_runs=${1:-20}
post_runs=${2:-5}
bin=$(cargo bench --bench waf --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/deps\/waf-[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "waf bench binary not built" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    PALISADE_WAF_REPLAY="$1:$2" valgrind --tool=callgrind \
        --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>&1
    awk '/^(summary|totals):/ {print $2; exit}' "$out/cg"
}
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
for kind in GET POST; do
    runs=$get_runs
    [ "$kind" = POST ] && runs=$post_runs
    base=$(count "$kind" 0)
    total=$(count "$kind" "$runs")
    echo "$kind: $(( (total - base) / runs )) instructions per transaction"
done
