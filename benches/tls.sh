#!/usr/bin/env bash
# TLS benchmark: Palisade against nginx as TLS-terminating reverse proxies in
# front of the same static nginx backend, with the same ECDSA P-256
# certificate, on loopback. Rows, each run REPS times, interleaved:
#   hs    full handshakes/s: every request on a new connection
#         (wrk -H "Connection: close"; wrk never resumes sessions)
#   ka    keep-alive requests/s over TLS, 1 KiB body
#   ka64  keep-alive requests/s over TLS, 64 KiB body
# Needs: nginx wrk openssl (apt-get install nginx wrk openssl).
#   cargo build --release && benches/tls.sh
# Knobs: REPS=3 DURATION=8 CONNS=64 THREADS=2 WORKERS=2 ROWS="hs ka ka64"
#        SERVER_CPUS= LOADGEN_CPUS= (taskset lists, e.g. 0 and 1) PALISADE_BIN
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PALISADE_BIN:-$root/target/release/palisade}
REPS=${REPS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-64} THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2} ROWS=${ROWS:-"hs ka ka64"}
SERVER_CPUS=${SERVER_CPUS:-} LOADGEN_CPUS=${LOADGEN_CPUS:-}
[[ -x $bin ]] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
for c in nginx wrk openssl setsid; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }; done

server_wrap=() loadgen_wrap=()
[[ -n $SERVER_CPUS ]] && server_wrap=(taskset -c "$SERVER_CPUS")
[[ -n $LOADGEN_CPUS ]] && loadgen_wrap=(taskset -c "$LOADGEN_CPUS")

run=$(mktemp -d /dev/shm/palisade-tls-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
    sleep 0.3
    rm -rf "$run"
}
trap cleanup EXIT
[[ -n ${KEEP_RUN:-} ]] && trap - EXIT
mkdir -p "$run"/{www,log,tmp}
head -c 1024 /dev/zero | tr '\0' 'a' > "$run/www/1k.html"
head -c 65536 /dev/zero | tr '\0' 'b' > "$run/www/64k.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$run/key.pem" -out "$run/cert.pem" 2>/dev/null
# nginx workers run as nobody when started as root.
chmod -R a+rX "$run"

base=$((20000 + RANDOM % 20000))
backend=$base nginx_port=$((base + 1)) palisade_port=$((base + 2))

temp_paths="client_body_temp_path $run/tmp/b; proxy_temp_path $run/tmp/p; fastcgi_temp_path $run/tmp/f; uwsgi_temp_path $run/tmp/u; scgi_temp_path $run/tmp/s;"
cat > "$run/backend.conf" <<CONF
worker_processes 1; pid $run/backend.pid; error_log $run/log/backend.log error;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000; $temp_paths
  types { text/html html; }
  server { listen 127.0.0.1:$backend backlog=4096; root $run/www; location / { } } }
CONF
# nginx as a TLS reverse proxy, configured as the shared bench configures
# its plain one (keep-alive upstream, buffers that hold 64 KiB).
cat > "$run/nginx.conf" <<CONF
worker_processes $WORKERS; pid $run/nginx.pid; error_log $run/log/nginx.log error;
events { worker_connections 4096; }
http { access_log off; tcp_nodelay on; keepalive_requests 1000000; $temp_paths
  upstream backend { server 127.0.0.1:$backend; keepalive 64; keepalive_requests 1000000; }
  proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_buffer_size 16k; proxy_buffers 8 16k;
  server {
    listen 127.0.0.1:$nginx_port ssl http2 backlog=4096;
    ssl_certificate $run/cert.pem; ssl_certificate_key $run/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://backend; }
  } }
CONF
cat > "$run/palisade.toml" <<CONF
[server]
listen = []
admin_listen = "off"
workers = $WORKERS
[server.limits]
max_connections = 4096
[[server.tls]]
listen = ["127.0.0.1:$palisade_port"]
cert = "$run/cert.pem"
key = "$run/key.pem"
[[upstreams]]
name = "backend"
servers = ["127.0.0.1:$backend"]
[[routes]]
upstream = "backend"
[log]
access = "off"
level = "warn"
CONF

start() { # name cmd...
    local name=$1; shift
    setsid "${server_wrap[@]}" "$@" > "$run/log/$name.out" 2>&1 &
    pids+=($!)
}
start backend nginx -q -p "$run" -c "$run/backend.conf" -g 'daemon off;'
start nginx nginx -q -p "$run" -c "$run/nginx.conf" -g 'daemon off;'
start palisade "$bin" run -c "$run/palisade.toml"
nginx_pgid=${pids[1]} palisade_pgid=${pids[2]}
for port in $backend $nginx_port $palisade_port; do
    for _ in $(seq 1 50); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.1
    done
done

# CPU ticks (user + system) of every process in a process group.
cpu_ticks() {
    local total=0 f stat
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        # Fields after the command name: state is field 3, pgrp field 5,
        # utime 14, stime 15.
        # shellcheck disable=SC2086
        set -- ${stat##*) }
        if [[ ${3:-} == "$pg" ]]; then total=$((total + ${12} + ${13})); fi
    done
    echo "$total"
}

row_path() { case $1 in ka64) echo /64k.html ;; *) echo /1k.html ;; esac; }

results=$run/results.txt
: > "$results"
measure() { # server port row rep
    local server=$1 port=$2 row=$3 rep=$4 out="$run/log/wrk-$1-$3-$4.txt"
    local args=() path
    path=$(row_path "$row")
    [[ $row == hs ]] && args=(-H "Connection: close")
    pg=$([[ $server == nginx ]] && echo "$nginx_pgid" || echo "$palisade_pgid")
    local before after
    before=$(cpu_ticks)
    "${loadgen_wrap[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
        -H "Host: bench.test" "${args[@]+"${args[@]}"}" "https://127.0.0.1:$port$path" > "$out" 2>&1 || true
    after=$(cpu_ticks)
    local rps p99 reqs errs
    rps=$(awk '/^Requests\/sec/{print $2}' "$out")
    p99=$(awk '$1=="99%"{print $2}' "$out")
    reqs=$(awk '/requests in/{print $1}' "$out")
    errs=$(awk '/Socket errors/{print}' "$out")
    local us
    us=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN{ if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "nan" }')
    echo "$row $server $rep $rps $p99 $us" >> "$results"
    echo "$row rep $rep $server: $rps req/s p99 $p99 cpu ${us}us/req ${errs}" >&2
}

# Warm up both, then interleave: nginx, palisade, palisade, nginx, ...
for row in $ROWS; do
    for s in nginx:$nginx_port palisade:$palisade_port; do
        "${loadgen_wrap[@]}" wrk -t"$THREADS" -c"$CONNS" -d2s -H "Host: bench.test" \
            "https://127.0.0.1:${s#*:}/1k.html" > /dev/null 2>&1 || true
    done
done
for rep in $(seq 1 "$REPS"); do
    for row in $ROWS; do
        if (( rep % 2 )); then order="nginx:$nginx_port palisade:$palisade_port"; else order="palisade:$palisade_port nginx:$nginx_port"; fi
        for s in $order; do measure "${s%%:*}" "${s#*:}" "$row" "$rep"; done
    done
done

echo
echo "TLS bench: wrk -t$THREADS -c$CONNS -d${DURATION}s, $REPS interleaved runs, WORKERS=$WORKERS, ECDSA P-256, SERVER_CPUS=${SERVER_CPUS:-none} LOADGEN_CPUS=${LOADGEN_CPUS:-none}"
echo "| row | nginx req/s (runs) | palisade req/s (runs) | ratio (mean) | p99 nginx / palisade | CPU µs/req nginx / palisade |"
echo "|---|---|---|---|---|---|"
for row in $ROWS; do
    awk -v row="$row" '
        $1 == row { runs[$2] = runs[$2] (runs[$2] ? " / " : "") $4; sum[$2] += $4; n[$2]++;
                    p99[$2] = p99[$2] (p99[$2] ? "," : "") $5; cpu[$2] += $6 }
        END {
            printf "| %s | %s | %s | %.3f× | %s / %s | %.1f / %.1f |\n", row, runs["nginx"], runs["palisade"],
                (sum["palisade"] / n["palisade"]) / (sum["nginx"] / n["nginx"]),
                p99["nginx"], p99["palisade"], cpu["nginx"] / n["nginx"], cpu["palisade"] / n["palisade"]
        }' "$results"
done
