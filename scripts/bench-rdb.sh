#!/usr/bin/env bash
# bench-rdb.sh: copying an RDB file of N keys (`ferry-tools fill`'s mixed profile, saved by this machine's
# redis-server) into an empty server, side by side in one run, the ways a user can:
#   1. redis-ferry copy FILE TARGET                       (this tool, reading the file itself), and the same
#      with --mode typed (every value decoded and written type-aware, as into a server that cannot RESTORE it)
#   2. a redis-server started on the file, then redis-ferry copy from it (what users do today: rent a server,
#      load the backup, migrate from it); the time counts the load (until INFO says loading:0) and the copy
#   3. rdb --command protocol FILE | redis-cli --pipe     (PyPI's rdbtools, in a venv), where it can read the
#      file (rdbtools reads RDB versions up to 9; this machine's Redis writes 10: then the row says so)
# For each: wall-clock keys/s, the ratio to way 1, peak RSS (GNU time -v; for way 2 the temporary server's
# peak too: INFO used_memory_peak and its RSS from /proc), and the target's CPU seconds per 100k keys
# (INFO cpu, before/after). Each way starts from an empty target and must end with the file's key count
# there (exit 1 otherwise, after the table).
#
# Usage: scripts/bench-rdb.sh [N]     N keys (default 1000000); scripts/bench.sh [N] rdb calls it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-1000000}
case "$N" in
    '' | *[!0-9]*)
        echo "error: N must be a whole number of keys (got '$N')" >&2
        exit 2
        ;;
esac

FERRY_SCRIPT=bench-rdb
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
install_time
setup_pair

server_cpu() {
    redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

now() {
    date +%s.%N
}

echo "== filling 127.0.0.1:$SRC with $N mixed keys, then SAVE" >&2
"$TOOLS" fill --url "redis://127.0.0.1:$SRC" --keys "$N" --seed 1 --profile mixed >&2
KEYS=$(dbsize "$SRC")
redis-cli -p "$SRC" save >/dev/null
FILE="$TMP/bench.rdb"
cp "$TMP/dump-$SRC.rdb" "$FILE"
# The file's server is not needed any more: it would only take CPU from the runs.
redis-cli -p "$SRC" shutdown nosave >/dev/null 2>&1 || true
FILE_MB=$(awk -v b="$(stat -c %s "$FILE")" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "== $FILE: $FILE_MB MiB, $KEYS keys, RDB version $(head -c 9 "$FILE" | tail -c 4)" >&2

problems=()

# finish NAME T0 T1 DCPU0: records wall, target CPU and the target's key count for run NAME.
finish() {
    local name=$1 t0=$2 t1=$3 dcpu0=$4
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.wall"
    awk -v a="$dcpu0" -v b="$(server_cpu "$DST")" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.dcpu"
    local got
    got=$(dbsize "$DST")
    echo "$got" >"$TMP/$name.dbsize"
    [ "$got" = "$KEYS" ] || problems+=("after $name the target holds $got keys, the file $KEYS")
    echo "-- $name: $(cat "$TMP/$name.wall") s, target holds $got keys" >&2
}

peak_kb() {
    sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$1"
}

# 1. redis-ferry from the file.
redis-cli -p "$DST" flushall >/dev/null
d0=$(server_cpu "$DST")
t0=$(now)
/usr/bin/time -v -o "$TMP/file.time" "$FERRY" copy "$FILE" "127.0.0.1:$DST" --progress 0 \
    --errors "$TMP/errors.csv" >"$TMP/file.out" 2>"$TMP/file.err" || problems+=("redis-ferry copy FILE exited with $?")
t1=$(now)
finish file "$t0" "$t1" "$d0"
peak_kb "$TMP/file.time" >"$TMP/file.rss"

# 1b. The same, decoded and written type-aware (the way a file goes into a server that cannot RESTORE it).
redis-cli -p "$DST" flushall >/dev/null
d0=$(server_cpu "$DST")
t0=$(now)
/usr/bin/time -v -o "$TMP/typed.time" "$FERRY" copy "$FILE" "127.0.0.1:$DST" --progress 0 --mode typed \
    --errors "$TMP/errors.csv" >"$TMP/typed.out" 2>"$TMP/typed.err" || problems+=("redis-ferry copy FILE --mode typed exited with $?")
t1=$(now)
finish typed "$t0" "$t1" "$d0"
peak_kb "$TMP/typed.time" >"$TMP/typed.rss"

# 2. A temporary server loads the file; then redis-ferry copies from it.
redis-cli -p "$DST" flushall >/dev/null
mkdir -p "$TMP/load"
cp "$FILE" "$TMP/load/dump.rdb"
d0=$(server_cpu "$DST")
t0=$(now)
port=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    port_free "$port" && break
done
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/load" \
    --dbfilename dump.rdb --daemonize no --logfile "$TMP/load.log" &
LOADER=$!
PIDS+=("$LOADER")
until [ "$(redis-cli -p "$port" info persistence 2>/dev/null | tr -d '\r' | sed -n 's/^loading://p')" = 0 ]; do
    kill -0 "$LOADER" 2>/dev/null || { echo "error: the temporary server died:" >&2; cat "$TMP/load.log" >&2; exit 1; }
    sleep 0.01
done
t_loaded=$(now)
/usr/bin/time -v -o "$TMP/load.time" "$FERRY" copy "127.0.0.1:$port" "127.0.0.1:$DST" --progress 0 \
    --errors "$TMP/errors.csv" >"$TMP/load.out" 2>"$TMP/load.err" || problems+=("redis-ferry copy from the loaded server exited with $?")
t1=$(now)
LOADER_RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$LOADER/status")
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$LOADER" 2>/dev/null || true
forget_pid "$LOADER"
finish load "$t0" "$t1" "$d0"
awk -v a="$t0" -v b="$t_loaded" 'BEGIN { printf "%.3f", b - a }' >"$TMP/load.loadtime"
echo $(($(peak_kb "$TMP/load.time") + LOADER_RSS_KB)) >"$TMP/load.rss"

# 3. rdbtools, from PyPI, in a venv of its own.
RDBTOOLS_NOTE=
if [ ! -x "$TMP/venv/bin/rdb" ]; then
    python3 -m venv "$TMP/venv" >&2 && "$TMP/venv/bin/pip" install -q rdbtools python-lzf >&2 ||
        RDBTOOLS_NOTE="could not be installed from PyPI"
fi
redis-cli -p "$DST" flushall >/dev/null
if [ -z "$RDBTOOLS_NOTE" ]; then
    d0=$(server_cpu "$DST")
    t0=$(now)
    set +o pipefail
    /usr/bin/time -v -o "$TMP/rdbtools.time" "$TMP/venv/bin/rdb" --command protocol "$FILE" 2>"$TMP/rdbtools.err" |
        redis-cli -p "$DST" --pipe >"$TMP/rdbtools.out" 2>&1
    set -o pipefail
    t1=$(now)
    if grep -q "Invalid RDB version" "$TMP/rdbtools.err"; then
        RDBTOOLS_NOTE="cannot read the file: $(grep -o "Invalid RDB version number [0-9][0-9]*" "$TMP/rdbtools.err" | head -1)"
    else
        finish rdbtools "$t0" "$t1" "$d0"
        peak_kb "$TMP/rdbtools.time" >"$TMP/rdbtools.rss"
    fi
fi

row() {
    local name=$1 label=$2
    awk -v label="$label" -v keys="$KEYS" -v wall="$(cat "$TMP/$name.wall")" -v base="$(cat "$TMP/file.wall")" \
        -v rss="$(cat "$TMP/$name.rss")" -v dcpu="$(cat "$TMP/$name.dcpu")" 'BEGIN {
            printf "%-44s %10.0f %9.2fx %10.1f %14.3f\n", label, keys / wall, base / wall, rss / 1024, dcpu * 100000 / keys
        }'
}

echo
echo "data: $KEYS keys of the mixed profile (seed 1) in a $FILE_MB MiB RDB file; $(redis-server --version | cut -d' ' -f3), $(nproc) CPUs"
printf "%-44s %10s %10s %10s %14s\n" "way" "keys/s" "vs ferry" "peak MB" "target s/100k"
row file "redis-ferry copy FILE"
row typed "redis-ferry copy FILE --mode typed"
row load "redis-server loads it, then redis-ferry copy"
awk -v keys="$KEYS" -v load="$(cat "$TMP/load.loadtime")" -v wall="$(cat "$TMP/load.wall")" 'BEGIN {
    printf "  (the load %.3f s, then the live copy %.3f s: %.0f keys/s; peak MB counts the temporary server and the copy)\n", load, wall - load, keys / (wall - load)
}'
if [ -z "$RDBTOOLS_NOTE" ]; then
    row rdbtools "rdb --command protocol | redis-cli --pipe"
else
    printf "%-44s %s\n" "rdb --command protocol | redis-cli --pipe" "n/a: rdbtools $RDBTOOLS_NOTE"
fi
fail_on_problems "bench-rdb"
