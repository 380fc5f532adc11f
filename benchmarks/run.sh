#!/usr/bin/env bash
# Switchboard vs Nchan on loopback, measured by the same tool (`switchboard bench`):
#   idle    idle memory per connection: one node, in-memory, $IDLE_N WebSocket and SSE
#           subscribers spread over $IDLE_ROOMS rooms/channels (see docs/BENCHMARKS.md)
#   fanout  fan-out across two nodes sharing Redis: $SIZES subscribers × $RATES messages/s (WebSocket)
# Every scenario starts fresh servers, runs the bench, and stops them; each is repeated
# $RUNS times. Results: one JSON per run under $OUT, then a table (benchmarks/summarize.py).
#
#   benchmarks/run.sh [idle|fanout|all]         (default: all)
#   env: RUNS=3 DURATION=10 SIZES="1000 10000" RATES="10 100 1000" IDLE_N=10000 IDLE_ROOMS=100
#        SWITCHBOARD_BIN=path (else: swift build -c release [--scratch-path $SCRATCH])
#        SWITCHBOARD_ARGS="--join-leave-limit 0" (extra `serve` flags)
#        SERVERS="switchboard nchan" OUT=dir BASE_PORT=19000 NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
# Needs: redis-server, nginx with libnginx-mod-nchan (apt-get install -y nginx libnginx-mod-nchan).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHAT=${1:-all}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
SIZES=${SIZES:-"1000 10000"}
RATES=${RATES:-"10 100 1000"}
IDLE_N=${IDLE_N:-10000}
IDLE_ROOMS=${IDLE_ROOMS:-100}
SERVERS=${SERVERS:-"switchboard nchan"}
BASE_PORT=${BASE_PORT:-19000}
OUT=${OUT:-$ROOT/benchmarks/results/$(date +%Y%m%d-%H%M%S)}
API_KEY=bench-api-key
SECRET=bench-secret-0123456789abcdef
WORK=$(mktemp -d /tmp/sb-bench.XXXXXX)
mkdir -p "$OUT"

ulimit -n "$(ulimit -Hn)" || true
echo "open files: $(ulimit -n)" >&2

if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
    build=(swift build -c release --product switchboard ${SCRATCH:+--scratch-path "$SCRATCH"})
    (cd "$ROOT" && "${build[@]}" >&2)
    SWITCHBOARD_BIN="$(cd "$ROOT" && "${build[@]}" --show-bin-path)/switchboard"
fi
command -v redis-server >/dev/null || { echo "redis-server missing" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing (apt-get install -y nginx libnginx-mod-nchan)" >&2; exit 1; }

PIDS=()          # every server process we started (killed on exit)
SERVER_PIDS=()   # the processes of the current scenario whose memory is sampled

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    PIDS=()
    SERVER_PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

wait_http() {  # URL — until it answers anything over HTTP
    for _ in $(seq 100); do [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") != 000 ]] && return 0; sleep 0.1; done
    echo "no answer from $1" >&2
    return 1
}

start_redis() {  # PORT
    redis-server --port "$1" --save '' --appendonly no --daemonize no --logfile "$WORK/redis-$1.log" &
    PIDS+=($!)
    for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

start_switchboard() {  # PORT [REDIS_URL]
    local args=(serve --host 127.0.0.1 --port "$1" --node-id "bench-$1" --log-level warning)
    [[ -n "${2:-}" ]] && args+=(--redis "$2")
    # shellcheck disable=SC2206  # extra flags, split on spaces on purpose
    [[ -n "${SWITCHBOARD_ARGS:-}" ]] && args+=($SWITCHBOARD_ARGS)
    SWITCHBOARD_API_KEY=$API_KEY SWITCHBOARD_SECRET=$SECRET SWITCHBOARD_MAX_CONNECTIONS_PER_IP=1000000 \
        "$SWITCHBOARD_BIN" "${args[@]}" >"$WORK/sb-$1.log" 2>&1 &
    PIDS+=($!)
    SERVER_PIDS+=($!)
    wait_http "http://127.0.0.1:$1/healthz"
}

start_nchan() {  # PORT [REDIS_URL]
    local prefix="$WORK/nchan-$1" redis_url="" redis_use=""
    mkdir -p "$prefix"/{body,proxy,fastcgi,uwsgi,scgi}
    if [[ -n "${2:-}" ]]; then
        redis_url="nchan_redis_url \"$2\";"
        redis_use="nchan_use_redis on;"
    fi
    sed -e "s#@PREFIX@#$prefix#g" -e "s#@PORT@#$1#g" -e "s#@REDIS_URL@#$redis_url#" -e "s#@REDIS_USE@#$redis_use#" \
        -e "s#/usr/lib/nginx/modules/ngx_nchan_module.so#${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}#" \
        "$ROOT/benchmarks/nchan/nchan.conf.template" >"$prefix/nginx.conf"
    nginx -p "$prefix" -c "$prefix/nginx.conf" -g 'daemon off;' >"$prefix/out.log" 2>&1 &
    local master=$!
    PIDS+=($master)
    wait_http "http://127.0.0.1:$1/pub?id=warmup" || { cat "$prefix/error.log" >&2; return 1; }
    SERVER_PIDS+=($master $(pgrep -P "$master" | tr '\n' ' '))
}

want() { [[ " $SERVERS " == *" $1 "* ]]; }

pid_list() { local IFS=,; echo "${SERVER_PIDS[*]}"; }

bench() {  # NAME ARGS… — runs the bench, saves its JSON as $OUT/NAME.json
    local name=$1; shift
    echo "== $name" >&2
    if "$SWITCHBOARD_BIN" bench --json --pids "$(pid_list)" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"; then
        python3 - "$OUT/$name.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1])); l = r["ledger"]; t = r["latency"]
print(f"   connected {r['connected']} in {r['connectSeconds']:.1f}s, {r['deliveriesPerSecond']:.0f} deliveries/s, "
      f"p50 {t['p50']:.2f} ms p99 {t['p99']:.2f} ms, lost {l['lost']}, dup {l['duplicates']}, "
      f"idle {r.get('idleKBPerConnection') or 0:.2f} KB/conn")
PY
    else
        echo "   failed: $(tail -2 "$OUT/$name.log")" >&2
        rm -f "$OUT/$name.json"
    fi
}

idle() {
    local p=$BASE_PORT transport scheme run
    for run in $(seq "$RUNS"); do
        for transport in ws sse; do
            if want switchboard; then
                start_switchboard $((p + 1))
                bench "idle-switchboard-$transport-$IDLE_N-r$run" --url "http://127.0.0.1:$((p + 1))" --api-key $API_KEY \
                    --transport $transport --subscribers "$IDLE_N" --rooms "$IDLE_ROOMS" --rate "$IDLE_ROOMS" --duration 1
                stop_all
            fi
            if want nchan; then
                scheme=http
                [[ $transport == ws ]] && scheme=ws
                start_nchan $((p + 2))
                bench "idle-nchan-$transport-$IDLE_N-r$run" --raw --transport $transport \
                    --url "$scheme://127.0.0.1:$((p + 2))/$transport?id=idle$run-{room}" \
                    --publish-url "http://127.0.0.1:$((p + 2))/pub?id=idle$run-{room}" \
                    --subscribers "$IDLE_N" --rooms "$IDLE_ROOMS" --rate "$IDLE_ROOMS" --duration 1
                stop_all
            fi
        done
    done
}

fanout() {
    local p=$BASE_PORT n rate run redis
    redis="redis://127.0.0.1:$((p + 9))"
    for run in $(seq "$RUNS"); do
        for n in $SIZES; do
            for rate in $RATES; do
                if want switchboard; then
                    start_redis $((p + 9))
                    start_switchboard $((p + 11)) "$redis"
                    start_switchboard $((p + 12)) "$redis"
                    bench "fanout-switchboard-$n-$rate-r$run" --url "http://127.0.0.1:$((p + 11))" \
                        --url "http://127.0.0.1:$((p + 12))" --api-key $API_KEY --subscribers "$n" --rate "$rate" \
                        --duration "$DURATION" --settle-timeout 1800
                    stop_all
                fi
                if want nchan; then
                    start_redis $((p + 9))
                    start_nchan $((p + 21)) "$redis"
                    start_nchan $((p + 22)) "$redis"
                    bench "fanout-nchan-$n-$rate-r$run" --raw --url "ws://127.0.0.1:$((p + 21))/ws?id=fan$run" \
                        --url "ws://127.0.0.1:$((p + 22))/ws?id=fan$run" --publish-url "http://127.0.0.1:$((p + 21))/pub?id=fan$run" \
                        --subscribers "$n" --rate "$rate" --duration "$DURATION"
                    stop_all
                fi
            done
        done
    done
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(free -m | awk '/Mem:/ {print $2 " MiB"}')"
    echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2), nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    echo "redis: $(redis-server --version | awk '{print $3}')"
    echo "switchboard: $SWITCHBOARD_BIN"
} | tee "$OUT/machine.txt" >&2

case $WHAT in
    idle) idle ;;
    fanout) fanout ;;
    all) idle; fanout ;;
    *) echo "usage: $0 [idle|fanout|all]" >&2; exit 2 ;;
esac
python3 "$ROOT/benchmarks/summarize.py" "$OUT" | tee "$OUT/table.md"
