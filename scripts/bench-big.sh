#!/usr/bin/env bash
# bench-big.sh: big keys, at the issue's full size by default: a list of N elements, a hash of N/2 fields
# and a string of N/10000 MB of random bytes (N = 1000000: 1,000,000 elements, 500,000 fields, 100 MB),
# on two throwaway redis-server processes on free 127.0.0.1 ports. Three copies, each from an empty
# target: redis-ferry with default flags (--mode auto: the three keys are above --big-key-bytes, so they
# go type-aware, in pages), --mode typed, and --mode auto --big-key-bytes 0 (no size check: each key in
# one DUMP/RESTORE, for comparison). For each: wall time, the tool's peak RSS (GNU time -v), and the
# longest single command on the source and on the target (SLOWLOG with a 0 threshold: how long a
# server was blocked at once). Each copy must be verified equal by `redis-ferry verify`; the script
# exits 1 if one is not, if a copy failed, or if the peak RSS of a paged copy is above RSS_BOUND_MB
# (default 32, the bound the README states).
#
# Usage: scripts/bench-big.sh [N]       (scripts/bench.sh N big calls it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-1000000}
case "$N" in
    '' | *[!0-9]*)
        echo "error: N must be a whole number (got '$N')" >&2
        exit 2
        ;;
esac
if [ "$N" -lt 10000 ]; then
    echo "error: N must be at least 10000 (got $N)" >&2
    exit 2
fi
RSS_BOUND_MB=${RSS_BOUND_MB:-32}

FERRY_SCRIPT=bench-big
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

now() {
    date +%s.%N
}

# RESP for RPUSH/HSET commands of 1000 elements each, for redis-cli --pipe.
resp_fill() {
    awk -v n="$N" 'function bulk(s) { printf "$%d\r\n%s\r\n", length(s), s }
    BEGIN {
        for (i = 0; i < n; i += 1000) {
            m = (n - i < 1000) ? n - i : 1000
            printf "*%d\r\n", m + 2; bulk("RPUSH"); bulk("big:list")
            for (j = i; j < i + m; j++) bulk("element-" j)
        }
        h = int(n / 2)
        for (i = 0; i < h; i += 1000) {
            m = (h - i < 1000) ? h - i : 1000
            printf "*%d\r\n", 2 * m + 2; bulk("HSET"); bulk("big:hash")
            for (j = i; j < i + m; j++) { bulk("field-" j); bulk("value-" j) }
        }
    }'
}

# The longest command in the SLOWLOG of the server on port $1, as "NAME MS" (entries of --json output
# start [id,time,microseconds,["name",...).
longest_command() {
    redis-cli -p "$1" --json slowlog get 1000000 | grep -oE '\[[0-9]+,[0-9]+,[0-9]+,\["[^"]*"' |
        awk -F'[][,"]+' '{ c = tolower($5) }
            c != "flushall" && c != "slowlog" && c != "config" && $4 > max { max = $4; name = toupper(c) }
            END { printf "%s %.1f", (name == "" ? "-" : name), max / 1000 }'
}

# run_case NAME ARGS...: empties the target, resets both slowlogs, runs redis-ferry copy ARGS under GNU
# time, verifies, and leaves NAME's figures in $TMP/NAME.*.
run_case() {
    local name=$1
    shift
    redis-cli -p "$DST" flushall >/dev/null
    for port in "$SRC" "$DST"; do
        redis-cli -p "$port" slowlog reset >/dev/null
    done
    local t0 t1 rc=0 vrc=0
    t0=$(now)
    /usr/bin/time -v -o "$TMP/$name.time" "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 0 \
        --errors "$TMP/$name-errors.csv" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
    t1=$(now)
    longest_command "$SRC" >"$TMP/$name.src_longest"
    longest_command "$DST" >"$TMP/$name.dst_longest"
    "$FERRY" verify "127.0.0.1:$SRC" "127.0.0.1:$DST" >"$TMP/$name.verify" 2>&1 || vrc=$?
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }' >"$TMP/$name.wall"
    sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$TMP/$name.time" >"$TMP/$name.rss"
    echo "-- $name: exit $rc, verify exit $vrc, $(cat "$TMP/$name.wall") s; $(tail -n 1 "$TMP/$name.out")" >&2
    [ "$rc" -eq 0 ] || problems+=("$name exited with $rc: $(tail -n 3 "$TMP/$name.err" | tr '\n' ' ')")
    [ "$vrc" -eq 0 ] || problems+=("$name: verify exited with $vrc: $(tail -n 1 "$TMP/$name.verify")")
}

install_time
setup_pair
for port in "$SRC" "$DST"; do
    redis-cli -p "$port" config set slowlog-log-slower-than 0 >/dev/null
    redis-cli -p "$port" config set slowlog-max-len 1000000 >/dev/null
done
MB=$((N / 10000))
echo "== source 127.0.0.1:$SRC, target 127.0.0.1:$DST; filling: list of $N, hash of $((N / 2)), string of $MB MB" >&2
resp_fill | redis-cli -p "$SRC" --pipe >/dev/null
head -c "$((MB * 1024 * 1024))" /dev/urandom >"$TMP/string.bin"
redis-cli -p "$SRC" -x set big:string <"$TMP/string.bin" >/dev/null
rm -f "$TMP/string.bin"
echo "== memory usage: list $(redis-cli -p "$SRC" memory usage big:list) B, hash $(redis-cli -p "$SRC" memory usage big:hash) B, string $(redis-cli -p "$SRC" memory usage big:string) B" >&2

problems=()
run_case auto
run_case typed --mode typed
run_case whole --big-key-bytes 0

row() {
    local name=$1 label=$2
    printf "%-36s %8s %12.1f %22s %22s\n" "$label" "$(cat "$TMP/$name.wall")" "$(awk -v k="$(cat "$TMP/$name.rss")" 'BEGIN { print k / 1024 }')" \
        "$(cat "$TMP/$name.src_longest")" "$(cat "$TMP/$name.dst_longest")"
}
echo
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "redis: $(redis-server --version)"
echo "data: big:list $N elements, big:hash $((N / 2)) fields, big:string $MB MB (random bytes)"
echo
printf "%-36s %8s %12s %22s %22s\n" copy seconds peak_rss_mb "src_longest_cmd_ms" "dst_longest_cmd_ms"
row auto "auto (default, big keys paged)"
row typed "--mode typed"
row whole "auto --big-key-bytes 0 (whole DUMP)"

for name in auto typed; do
    rss_kb=$(cat "$TMP/$name.rss")
    if [ "${rss_kb:-0}" -gt $((RSS_BOUND_MB * 1024)) ]; then
        problems+=("$name: peak RSS $((rss_kb / 1024)) MB is above the bound of $RSS_BOUND_MB MB")
    fi
done
fail_on_problems "WARNING"
