#!/usr/bin/env bash
# bench.sh: redis-ferry against the baseline it must beat (SCAN + server-side MIGRATE ... COPY REPLACE
# KEYS, as `ferry-tools migrate`), its own `--mode typed`, and `--read-from replica` (from a replica of the
# source started for it: the primary's CPU with and without the copy's reads), side by side in one run on the same data and the same two throwaway
# redis-server processes on free 127.0.0.1 ports. For each tool: wall-clock keys/s, the ratio to MIGRATE,
# the tool's peak RSS (GNU time -v; for migrate that is the ferry-tools driver, the data moves inside
# redis), the CPU seconds per 100k keys of the source and the target (INFO CPU used_cpu_sys +
# used_cpu_user, before/after) and of the tool itself (GNU time: user + system), and the source's p99 PING
# latency while the tool ran (`ferry-tools probe`, one PING every 10 ms).
# Each run starts from an empty target (FLUSHALL) and must end with target DBSIZE == source DBSIZE.
# Exits 1 if a tool failed or a DBSIZE disagreed (after printing the table).
#
# Mode throttle measures the gentleness flags on the same kind of data instead (see throttle_bench):
# achieved rate vs --rate over 30 s windows, the source's CPU share vs --rate and --sleep-after-batch,
# and the source's PING latency under a competing redis-benchmark load without and with --max-latency.
# Mode big runs scripts/bench-big.sh N when that script exists; mode shards runs scripts/bench-shards.sh N
# (one copy split over processes with --shard, against one process); mode follow runs
# scripts/bench-follow.sh [N] (copy --follow under a writer load: lag, CPU per event, RSS; its own default N);
# mode rdb runs scripts/bench-rdb.sh N (an RDB file copied into an empty server: this tool, a temporary server
# loading it and a copy from there, and rdbtools' protocol output piped to redis-cli).
#
# Usage: scripts/bench.sh [N] [mode]      N keys (default 1000000), mode mixed (default) | big | throttle |
#                                         shards | follow | rdb; a mode alone (scripts/bench.sh follow) takes the default N
#                                         (for follow, bench-follow.sh's own: 100000)
# Environment for mode throttle: RATES (default "2000 10000 25000", scaled down when N is too small to
# keep the top rate busy for a whole window), WINDOW seconds per rate (default 30), MAX_LATENCY_MS (2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A mode alone: that mode with its default N.
if [ "$#" -eq 1 ]; then
    case "$1" in
        mixed | big | throttle | shards | follow | rdb) set -- "" "$1" ;;
    esac
fi
N_GIVEN=${1:-}
N=${N_GIVEN:-1000000}
MODE=${2:-mixed}
case "$N" in
    '' | *[!0-9]*)
        echo "error: N must be a whole number of keys (got '$N')" >&2
        exit 2
        ;;
esac
case "$MODE" in
    mixed | throttle) ;;
    big)
        # The big-key bench is a script of its own, with its own data and table.
        if [ -f scripts/bench-big.sh ]; then
            exec bash scripts/bench-big.sh "$N"
        fi
        echo "bench mode 'big': not yet implemented (scripts/bench-big.sh)"
        exit 0
        ;;
    shards)
        exec bash scripts/bench-shards.sh "$N"
        ;;
    rdb)
        exec bash scripts/bench-rdb.sh "$N"
        ;;
    follow)
        # Its own default N (100000): the follow's figures come from the load, not the data set's size.
        exec bash scripts/bench-follow.sh ${N_GIVEN:+"$N_GIVEN"}
        ;;
    *)
        echo "error: mode must be mixed, big, throttle, shards, follow or rdb (got '$MODE')" >&2
        exit 2
        ;;
esac

FERRY_SCRIPT=bench
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Seconds of CPU the server on port $1 has used so far (user + system, main process only).
server_cpu() {
    redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
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
    local cpu0 cpu1 dcpu0 dcpu1 t0 t1 rc=0
    cpu0=$(server_cpu "$SRC")
    dcpu0=$(server_cpu "$DST")
    t0=$(now)
    /usr/bin/time -v -o "$TMP/$name.time" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
    t1=$(now)
    cpu1=$(server_cpu "$SRC")
    dcpu1=$(server_cpu "$DST")
    kill -TERM "$probe"
    wait "$probe" || true
    forget_pid "$probe"
    echo "$rc" >"$TMP/$name.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.wall"
    awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.cpu"
    awk -v a="$dcpu0" -v b="$dcpu1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.dcpu"
    dbsize "$DST" >"$TMP/$name.dbsize"
    echo "-- $name: exit $rc, $(cat "$TMP/$name.wall") s; last stdout line: $(tail -n 1 "$TMP/$name.out")" >&2
    if [ "$rc" -ne 0 ]; then
        echo "-- $name stderr (last lines):" >&2
        tail -n 20 "$TMP/$name.err" >&2
    fi
}

# ---------------------------------------------------------------------------------------------------
# Mode throttle
# ---------------------------------------------------------------------------------------------------

# run_for SECS NAME COMMAND...: runs a redis-ferry copy for at most SECS seconds, then sends it SIGINT
# (it finishes its batches in flight and prints its summary). Leaves $TMP/NAME.{out,err,wall,cpu,rc};
# cpu is the source's CPU seconds over the run. `timeout --foreground` signals the copy only, not the
# process group, so the copy sees one Ctrl-C, not two.
run_for() {
    local secs=$1 name=$2
    shift 2
    local cpu0 cpu1 t0 t1 rc=0
    cpu0=$(server_cpu "$SRC")
    t0=$(now)
    timeout --foreground --preserve-status -s INT "$secs" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
    t1=$(now)
    cpu1=$(server_cpu "$SRC")
    echo "$rc" >"$TMP/$name.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.wall"
    awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.cpu"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; then
        problems+=("$name exited with $rc")
        tail -n 20 "$TMP/$name.err" >&2
    fi
    echo "-- $name: exit $rc, $(cat "$TMP/$name.wall") s; $(tail -n 1 "$TMP/$name.out")" >&2
}

# The value of KEY=... in the last stdout line of run NAME.
summary_field() {
    tail -n 1 "$TMP/$1.out" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# One row of the CPU table for run NAME: keys/s, the source's CPU share and its CPU seconds per 100k keys.
cpu_row() {
    local name=$1 label=$2
    awk -v label="$label" -v keys="$(summary_field "$name" copied)" -v secs="$(summary_field "$name" seconds)" \
        -v wall="$(cat "$TMP/$name.wall")" -v cpu="$(cat "$TMP/$name.cpu")" 'BEGIN {
            kps = secs > 0 ? keys / secs : 0
            printf "%-28s %10.0f %11.1f %15.3f\n", label, kps, 100 * cpu / wall, (keys > 0 ? cpu * 100000 / keys : 0)
        }'
}

# Achieved rate from `ferry-tools count` samples (SECONDS KEYS per line) for a copy at rate R: the lowest
# and highest average over every WINDOW-second stretch starting after the first second of writing, the
# largest relative error, and the largest excess of keys written over R*dt between any two samples
# (what a burst looks like from the target).
rate_row() {
    local name=$1 rate=$2 burst=$3
    awk -v R="$rate" -v W="$WINDOW" -v burst="$burst" -v cpu="$(cat "$TMP/$name.cpu")" \
        -v wall="$(cat "$TMP/$name.wall")" '
        { t[n] = $1; k[n] = $2; n++ }
        END {
            first = -1
            for (i = 0; i < n; i++) if (k[i] > 0) { first = t[i]; break }
            lo = -1; hi = 0; windows = 0; j = 0
            for (i = 0; i < n; i++) {
                if (first < 0 || t[i] < first + 1) continue
                while (j < n && t[j] < t[i] + W) j++
                if (j >= n) break
                r = (k[j] - k[i]) / (t[j] - t[i])
                if (lo < 0 || r < lo) lo = r
                if (r > hi) hi = r
                windows++
            }
            excess = 0
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) {
                e = k[j] - k[i] - R * (t[j] - t[i])
                if (e > excess) excess = e
            }
            if (windows == 0) { printf "%8d %14s %9s %9s %12.0f %6d %9.1f\n", R, "n/a", "n/a", "n/a", excess, burst, 100 * cpu / wall; exit }
            err = (hi - R) / R; if ((R - lo) / R > err) err = (R - lo) / R
            printf "%8d %14s %9d %8.2f%% %12.0f %6d %9.1f\n", R, sprintf("%.0f-%.0f", lo, hi), windows, 100 * err, excess, burst, 100 * cpu / wall
        }' "$TMP/$name.count"
}

# Sum of a counter of INFO commandstats (cmdstat_get and cmdstat_set calls) on the source.
load_calls() {
    redis-cli -p "$SRC" info commandstats | tr -d '\r' |
        awk -F'[=,:]' '/^cmdstat_(get|set):/ { s += $3 } END { printf "%d", s }'
}

# One case with the competing load running: NAME, then a copy command (run for at most WINDOW_LOAD
# seconds), or none for the load alone (WINDOW_LOAD seconds). The probe PINGs the source every 10 ms for
# exactly that time; the load's GET+SET per second come from INFO commandstats.
load_case() {
    local name=$1
    shift
    local c0 c1 probe t0 t1
    redis-cli -p "$DST" flushall >/dev/null
    "$TOOLS" probe --url "redis://127.0.0.1:$SRC" --interval-ms 10 >"$TMP/$name.probe" &
    probe=$!
    PIDS+=("$probe")
    c0=$(load_calls)
    t0=$(now)
    if [ "$#" -gt 0 ]; then
        run_for "$WINDOW_LOAD" "$name" "$@"
    else
        sleep "$WINDOW_LOAD"
    fi
    t1=$(now)
    c1=$(load_calls)
    kill -INT "$probe"
    wait "$probe" || true
    forget_pid "$probe"
    awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f", (b - a) / (t1 - t0) }' >"$TMP/$name.load"
}

load_row() {
    local name=$1 label=$2 kps=n/a
    if [ -f "$TMP/$name.out" ]; then
        kps=$(awk -v k="$(summary_field "$name" copied)" -v s="$(summary_field "$name" seconds)" \
            'BEGIN { printf "%.0f", (s > 0 ? k / s : 0) }')
    fi
    local p50 p99 max
    p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' "$TMP/$name.probe")
    p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' "$TMP/$name.probe")
    max=$(sed -n 's/.*max_ms=\([0-9.]*\).*/\1/p' "$TMP/$name.probe")
    printf "%-34s %10s %12s %9s %9s %9s\n" "$label" "$kps" "$(cat "$TMP/$name.load")" "$p50" "$p99" "$max"
}

throttle_bench() {
    WINDOW=${WINDOW:-30}
    WINDOW_LOAD=15
    MAX_LATENCY_MS=${MAX_LATENCY_MS:-2}
    local batch=500 rates r
    # Each rate must keep the copy busy for the whole run: WINDOW + 5 seconds of keys at most.
    rates=${RATES:-$(awk -v n="$SRC_KEYS" -v w="$WINDOW" 'BEGIN {
        top = 25000; cap = n / (w + 5)
        f = cap < top ? cap / top : 1
        printf "%d %d %d", 2000 * f, 10000 * f, 25000 * f }')}
    problems=()
    command -v redis-benchmark >/dev/null || { echo "error: redis-benchmark not found (package redis-tools)" >&2; exit 2; }

    echo "== 1) --rate R for $((WINDOW + 5)) s each: $rates keys/s" >&2
    for r in $rates; do
        redis-cli -p "$DST" flushall >/dev/null
        "$TOOLS" count --url "redis://127.0.0.1:$DST" --interval-ms 100 >"$TMP/rate-$r.count" &
        local counter=$!
        PIDS+=("$counter")
        run_for "$((WINDOW + 5))" "rate-$r" "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --rate "$r" \
            --progress 0 --errors "$TMP/errors.csv"
        kill -INT "$counter"
        wait "$counter" || true
        forget_pid "$counter"
    done

    echo "== 2) source CPU: unlimited, then --sleep-after-batch MS, 10 s each" >&2
    redis-cli -p "$DST" flushall >/dev/null
    run_for 10 unlimited "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --errors "$TMP/errors.csv"
    local sleeps="5 10 20 50" ms
    for ms in $sleeps; do
        redis-cli -p "$DST" flushall >/dev/null
        run_for 10 "sleep-$ms" "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --sleep-after-batch "$ms" \
            --progress 0 --errors "$TMP/errors.csv"
    done

    echo "== 3) competing load (redis-benchmark -t get,set -c 20), $WINDOW_LOAD s per case" >&2
    timeout 300 redis-benchmark -h 127.0.0.1 -p "$SRC" -t get,set -c 20 -n 1000000000 -q >/dev/null 2>&1 &
    local load=$!
    PIDS+=("$load")
    sleep 1
    load_case load-only
    load_case load-copy "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --errors "$TMP/errors.csv"
    load_case load-gentle "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --max-latency "$MAX_LATENCY_MS" \
        --progress 0 --errors "$TMP/errors.csv"
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    forget_pid "$load"
    if [ -s "$TMP/errors.csv" ]; then
        problems+=("redis-ferry wrote $(($(wc -l <"$TMP/errors.csv") - 1)) rows to its error CSV")
    fi

    echo
    echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "redis: $(redis-server --version)"
    echo "data: $SRC_KEYS keys, profile $PROFILE, seed 1; batch $batch (default), burst = batch"
    echo
    echo "1) achieved rate over ${WINDOW}-second windows (target DBSIZE every 100 ms), burst seen at the target"
    printf "%8s %14s %9s %9s %12s %6s %9s\n" rate achieved windows max_err max_excess burst src_cpu%
    for r in $rates; do
        rate_row "rate-$r" "$r" "$batch"
    done
    echo
    echo "2) source CPU share against --rate and --sleep-after-batch"
    printf "%-28s %10s %11s %15s\n" setting keys/s src_cpu_% src_cpu_s/100k
    for r in $rates; do
        cpu_row "rate-$r" "--rate $r"
    done
    cpu_row unlimited "unlimited (defaults)"
    for ms in $sleeps; do
        cpu_row "sleep-$ms" "--sleep-after-batch $ms"
    done
    echo
    echo "3) source PING latency (every 10 ms) with redis-benchmark -t get,set -c 20 running on it"
    printf "%-34s %10s %12s %9s %9s %9s\n" case copy_keys/s load_ops/s p50_ms p99_ms max_ms
    load_row load-only "load alone"
    load_row load-copy "load + copy (defaults)"
    load_row load-gentle "load + copy --max-latency $MAX_LATENCY_MS"
    grep -- '--max-latency:' "$TMP/load-gentle.err" | tail -n 3 | sed 's/^/   /'

    fail_on_problems "WARNING"
}

install_time
setup_pair

PROFILE=mixed
echo "== filling the source with $N $PROFILE keys" >&2
"$TOOLS" fill --url "redis://127.0.0.1:$SRC" --keys "$N" --seed 1 --profile "$PROFILE" >&2
SRC_KEYS=$(dbsize "$SRC")

if [ "$MODE" = throttle ]; then
    throttle_bench
    exit 0
fi

echo "== a) MIGRATE baseline (ferry-tools migrate)" >&2
run_case migrate "$TOOLS" migrate --source "127.0.0.1:$SRC" --target "127.0.0.1:$DST"
echo "== b) redis-ferry copy, default flags" >&2
run_case ferry "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --errors "$TMP/errors.csv"
echo "== c) redis-ferry copy --mode typed (what a copy to Valkey or to an older server does)" >&2
run_case typed "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --mode typed --errors "$TMP/errors.csv"
echo "== d) redis-ferry copy --read-from replica (a replica of the source, started and synced first)" >&2
start_server
REPLICA=$STARTED_PORT
redis-cli -p "$REPLICA" replicaof 127.0.0.1 "$SRC" >/dev/null
for _ in $(seq 1 1200); do
    if redis-cli -p "$REPLICA" info replication | tr -d '\r' | grep -qx 'master_link_status:up' &&
        [ "$(dbsize "$REPLICA")" = "$SRC_KEYS" ]; then
        break
    fi
    sleep 0.5
done
rcpu0=$(server_cpu "$REPLICA")
run_case replica "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 --read-from replica \
    --errors "$TMP/errors.csv"
rcpu1=$(server_cpu "$REPLICA")

problems=()
for name in migrate ferry typed replica; do
    rc=$(cat "$TMP/$name.rc")
    got=$(cat "$TMP/$name.dbsize")
    [ "$rc" -eq 0 ] || problems+=("$name exited with $rc")
    [ "$got" = "$SRC_KEYS" ] || problems+=("after $name the target holds $got keys, the source $SRC_KEYS")
done
if [ -s "$TMP/errors.csv" ]; then
    problems+=("redis-ferry wrote $(($(wc -l <"$TMP/errors.csv") - 1)) rows to its error CSV")
    head -n 6 "$TMP/errors.csv" >&2
fi

# One table row per tool; keys/s is the source's key count over the tool's wall-clock time. The three
# parts of the cost, per 100k keys: the source's CPU, the target's (INFO CPU, before/after) and the tool's
# own (user + system, GNU time; for migrate the ferry-tools driver, the data moves inside redis).
row() {
    local name=$1 label=$2 base_kps=$3
    local wall cpu dcpu rss_kb p99 user sys
    wall=$(cat "$TMP/$name.wall")
    cpu=$(cat "$TMP/$name.cpu")
    dcpu=$(cat "$TMP/$name.dcpu")
    rss_kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$TMP/$name.time")
    user=$(sed -n 's/^[[:space:]]*User time (seconds): //p' "$TMP/$name.time")
    sys=$(sed -n 's/^[[:space:]]*System time (seconds): //p' "$TMP/$name.time")
    p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' "$TMP/$name.probe")
    awk -v label="$label" -v keys="$SRC_KEYS" -v wall="$wall" -v cpu="$cpu" -v dcpu="$dcpu" -v rss="${rss_kb:-0}" \
        -v tool="$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { print u + s }')" \
        -v p99="${p99:-n/a}" -v base="$base_kps" 'BEGIN {
            kps = wall > 0 ? keys / wall : 0
            ratio = base > 0 ? kps / base : 1
            per = keys > 0 ? 100000 / keys : 0
            printf "%-22s %12.0f %9.2fx %12.1f %15.3f %15.3f %15.3f %16s\n", label, kps, ratio, rss / 1024, \
                cpu * per, dcpu * per, tool * per, p99
        }'
}
MIGRATE_KPS=$(awk -v k="$SRC_KEYS" -v w="$(cat "$TMP/migrate.wall")" 'BEGIN { printf "%.3f", (w > 0 ? k / w : 0) }')

echo
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "redis: $(redis-server --version)"
echo "data: $SRC_KEYS keys, profile $PROFILE, seed 1"
echo "migrate: $(tail -n 1 "$TMP/migrate.out")"
echo "ferry:   $(tail -n 1 "$TMP/ferry.out")"
echo "typed:   $(tail -n 1 "$TMP/typed.out")"
echo "replica: $(tail -n 1 "$TMP/replica.out")"
echo "probes:  migrate $(cat "$TMP/migrate.probe") | ferry $(cat "$TMP/ferry.probe") | typed $(cat "$TMP/typed.probe")"
echo
printf "%-22s %12s %10s %12s %15s %15s %15s %16s\n" tool keys/s vs_migrate peak_rss_mb src_cpu_s/100k \
    dst_cpu_s/100k tool_cpu_s/100k src_p99_ping_ms
row migrate "MIGRATE (ferry-tools)" "$MIGRATE_KPS"
row ferry "redis-ferry copy" "$MIGRATE_KPS"
row typed "redis-ferry --mode typed" "$MIGRATE_KPS"
row replica "ferry --read-from replica" "$MIGRATE_KPS"
echo
# With --read-from replica the src columns are the primary's (it serves no read; the probe PINGs it).
awk -v a="$rcpu0" -v b="$rcpu1" -v keys="$SRC_KEYS" 'BEGIN {
    printf "--read-from replica: the replica used %.3f CPU s per 100k keys; src_cpu above is the primary'"'"'s\n", \
        (keys > 0 ? (b - a) * 100000 / keys : 0) }'

fail_on_problems "WARNING"
