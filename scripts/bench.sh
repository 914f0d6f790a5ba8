#!/usr/bin/env bash
# bench.sh: redis-ferry against the baseline it must beat (SCAN + server-side MIGRATE ... COPY REPLACE
# KEYS, as `ferry-tools migrate`), side by side in one run on the same data and the same two throwaway
# redis-server processes on free 127.0.0.1 ports. For each tool: wall-clock keys/s, the ratio to MIGRATE,
# the tool's peak RSS (GNU time -v; for migrate that is the ferry-tools driver, the data moves inside
# redis), the source's CPU seconds per 100k keys (INFO CPU used_cpu_sys + used_cpu_user, before/after)
# and the source's p99 PING latency while the tool ran (`ferry-tools probe`, one PING every 10 ms).
# Each run starts from an empty target (FLUSHALL) and must end with target DBSIZE == source DBSIZE.
# Exits 1 if a tool failed or a DBSIZE disagreed (after printing the table); modes big and throttle
# are not implemented yet and exit 0.
#
# Usage: scripts/bench.sh [N] [mode]      N keys (default 1000000), mode mixed (default) | big | throttle
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-1000000}
MODE=${2:-mixed}
case "$N" in
    '' | *[!0-9]*)
        echo "error: N must be a whole number of keys (got '$N')" >&2
        exit 2
        ;;
esac
case "$MODE" in
    mixed) ;;
    big | throttle)
        echo "bench mode '$MODE': not yet implemented"
        exit 0
        ;;
    *)
        echo "error: mode must be mixed, big or throttle (got '$MODE')" >&2
        exit 2
        ;;
esac
TARGET_DIR=${CARGO_TARGET_DIR:-target}

FERRY_SCRIPT=bench
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

install_time() {
    if [ -x /usr/bin/time ]; then
        return
    fi
    echo "== installing GNU time" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y time
}

# Seconds of CPU the server on port $1 has used so far (user + system, main process only).
server_cpu() {
    redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

# Drops a finished process from PIDS, so the exit trap never signals a pid the system may have reused.
forget_pid() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

now() {
    date +%s.%N
}

# run_case NAME COMMAND...: empties the target, runs COMMAND under GNU time with a probe on the source,
# and leaves NAME's measurements in $TMP/NAME.* (out, err, time, probe, wall, cpu, rc, dbsize).
run_case() {
    local name=$1
    shift
    redis-cli -p "$DST" flushall >/dev/null
    "$TOOLS" probe --url "redis://127.0.0.1:$SRC" --interval-ms 10 >"$TMP/$name.probe" &
    local probe=$!
    PIDS+=("$probe")
    sleep 0.3 # let the probe connect and take a few quiet samples
    local cpu0 cpu1 t0 t1 rc=0
    cpu0=$(server_cpu "$SRC")
    t0=$(now)
    /usr/bin/time -v -o "$TMP/$name.time" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
    t1=$(now)
    cpu1=$(server_cpu "$SRC")
    kill -TERM "$probe"
    wait "$probe" || true
    forget_pid "$probe"
    echo "$rc" >"$TMP/$name.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.wall"
    awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.cpu"
    dbsize "$DST" >"$TMP/$name.dbsize"
    echo "-- $name: exit $rc, $(cat "$TMP/$name.wall") s; last stdout line: $(tail -n 1 "$TMP/$name.out")" >&2
    if [ "$rc" -ne 0 ]; then
        echo "-- $name stderr (last lines):" >&2
        tail -n 20 "$TMP/$name.err" >&2
    fi
}

install_redis
install_time
echo "== building (cargo build --release)" >&2
cargo build --release
FERRY=$TARGET_DIR/release/redis-ferry
TOOLS=$TARGET_DIR/release/ferry-tools

start_server
SRC=$STARTED_PORT
start_server
DST=$STARTED_PORT
echo "== source 127.0.0.1:$SRC, target 127.0.0.1:$DST" >&2

echo "== filling the source with $N $MODE keys" >&2
"$TOOLS" fill --url "redis://127.0.0.1:$SRC" --keys "$N" --seed 1 --profile "$MODE" >&2
SRC_KEYS=$(dbsize "$SRC")

echo "== a) MIGRATE baseline (ferry-tools migrate)" >&2
run_case migrate "$TOOLS" migrate --source "127.0.0.1:$SRC" --target "127.0.0.1:$DST"
echo "== b) redis-ferry copy, default flags" >&2
run_case ferry "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --errors "$TMP/errors.csv"

problems=()
for name in migrate ferry; do
    rc=$(cat "$TMP/$name.rc")
    got=$(cat "$TMP/$name.dbsize")
    [ "$rc" -eq 0 ] || problems+=("$name exited with $rc")
    [ "$got" = "$SRC_KEYS" ] || problems+=("after $name the target holds $got keys, the source $SRC_KEYS")
done
if [ -s "$TMP/errors.csv" ]; then
    problems+=("redis-ferry wrote $(($(wc -l <"$TMP/errors.csv") - 1)) rows to its error CSV")
    head -n 6 "$TMP/errors.csv" >&2
fi

# One table row per tool; keys/s is the source's key count over the tool's wall-clock time.
row() {
    local name=$1 label=$2 base_kps=$3
    local wall cpu rss_kb p99
    wall=$(cat "$TMP/$name.wall")
    cpu=$(cat "$TMP/$name.cpu")
    rss_kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$TMP/$name.time")
    p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' "$TMP/$name.probe")
    awk -v label="$label" -v keys="$SRC_KEYS" -v wall="$wall" -v cpu="$cpu" -v rss="${rss_kb:-0}" \
        -v p99="${p99:-n/a}" -v base="$base_kps" 'BEGIN {
            kps = wall > 0 ? keys / wall : 0
            ratio = base > 0 ? kps / base : 1
            cpu100k = keys > 0 ? cpu * 100000 / keys : 0
            printf "%-22s %12.0f %9.2fx %12.1f %18.3f %16s\n", label, kps, ratio, rss / 1024, cpu100k, p99
        }'
}
MIGRATE_KPS=$(awk -v k="$SRC_KEYS" -v w="$(cat "$TMP/migrate.wall")" 'BEGIN { printf "%.3f", (w > 0 ? k / w : 0) }')

echo
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "redis: $(redis-server --version)"
echo "data: $SRC_KEYS keys, profile $MODE, seed 1"
echo "migrate: $(tail -n 1 "$TMP/migrate.out")"
echo "ferry:   $(tail -n 1 "$TMP/ferry.out")"
echo "probes:  migrate $(cat "$TMP/migrate.probe") | ferry $(cat "$TMP/ferry.probe")"
echo
printf "%-22s %12s %10s %12s %18s %16s\n" tool keys/s vs_migrate peak_rss_mb src_cpu_s/100k src_p99_ping_ms
row migrate "MIGRATE (ferry-tools)" "$MIGRATE_KPS"
row ferry "redis-ferry copy" "$MIGRATE_KPS"

if [ "${#problems[@]}" -gt 0 ]; then
    echo
    for p in "${problems[@]}"; do
        echo "WARNING: $p" >&2
    done
    exit 1
fi
