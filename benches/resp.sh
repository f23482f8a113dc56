#!/usr/bin/env bash
# redis-benchmark against examples/resp_server.rs (silt under Sync on one
# thread and on two, Buffered on one) and against redis-server with its
# append-only file (appendfsync always, then everysec), then with no
# persistence (what the client itself can drive), in one run on this
# machine.
#
#   bash benches/resp.sh            # N=1000000 requests per test
#   N=200000 bash benches/resp.sh   # quicker
#
# Needs redis-tools and redis-server (apt-get install redis-tools
# redis-server). SILT_BENCH_DIR: where the stores live (default /tmp).
# The client shares the 2 cores with the server it measures.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
base=$(mktemp -d "${SILT_BENCH_DIR:-/tmp}/resp-bench.XXXXXX")
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$base"' EXIT

cargo build --release --example resp_server > /dev/null 2>&1

wait_for() {
    for _ in $(seq 1 200); do
        redis-cli -p "$1" PING > /dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    exit 1
}

# One server: SET and GET, pipelines 1 and 16; prints table rows.
measure() {
    local name=$1 port=$2
    for P in 1 16; do
        redis-benchmark -p "$port" -t set,get -n "$N" -r "$N" -d 100 -c 50 -P "$P" --csv 2> /dev/null |
            awk -F'","' -v name="$name" -v P="$P" '
                /^"SET"|^"GET"/ { gsub(/"/, "", $1); gsub(/"/, "", $2); gsub(/"/, "", $7);
                                  printf "| %s | %s | -P %s | %.0f | %s ms |\n", name, $1, P, $2, $7 }'
    done
}

echo "| server | test | pipeline | requests/s | p99 |"
echo "|---|---|---|---|---|"
port=6391
# silt: Sync on one thread (the server's default) and on two, Buffered.
for run in sync:1 sync:2 buffered:1; do
    mode=${run%:*} threads=${run#*:}
    target/release/examples/resp_server --dir "$base/silt-$mode-$threads" --addr "127.0.0.1:$port" \
        --durability "$mode" --threads "$threads" > /dev/null &
    pid=$!
    wait_for "$port"
    measure "silt $mode, $threads thread(s)" "$port"
    kill -INT "$pid"
    wait "$pid" || true
    port=$((port + 1))
done
version=$(redis-server --version | awk '{print $3}' | tr -d v=)
# The last server keeps nothing: what redis-benchmark itself can drive on
# this machine, the ceiling for every row above.
for fsync in always everysec none; do
    mkdir -p "$base/redis-$fsync"
    if [ "$fsync" = none ]; then
        persist=(--appendonly no) name="redis-server $version, no persistence (client ceiling)"
    else
        persist=(--appendonly yes --appendfsync "$fsync") name="redis-server $version appendfsync $fsync"
    fi
    redis-server --port "$port" --dir "$base/redis-$fsync" "${persist[@]}" --save "" --daemonize no > /dev/null &
    pid=$!
    wait_for "$port"
    measure "$name" "$port"
    kill "$pid"
    wait "$pid" || true
    port=$((port + 1))
done
