#!/usr/bin/env bash
# bench-follow.sh: what `redis-ferry copy --follow` costs and how far it lags behind a source under a
# steady writer load, on two throwaway redis-server processes on free 127.0.0.1 ports (both on this
# machine, so the servers, the follow and the writers share its cores). The source is filled with N keys
# of `ferry-tools fill`'s mixed profile; a follow (--enable-notifications --metrics) copies them and, once
# its metrics say phase following with no dirty key left, `ferry-tools load` writes to the source at each
# rate of FOLLOW_RATES for FOLLOW_SECONDS (its mixed writes, deletes, TTLs of 50-2000 ms, renames and
# type changes on FOLLOW_KEYS groups of 3 keys). For each rate:
# - the rate achieved (the load's ops_per_sec; it errs where it cannot keep the schedule);
# - the lag: redis_ferry_dirty_oldest_seconds (the age of the oldest event whose key is not written to the
#   target yet, waiting or in flight) sampled every 100 ms over the load window, its p50, p99 and max;
# - the source's CPU per keyspace event (INFO cpu used_cpu_sys + used_cpu_user, before/after, over
#   redis_ferry_events_total before/after): with the follow running, without (the same load, same seed,
#   run before the follow started, notifications off; its CPU scaled to the follow run's op count), and
#   the difference, which is the follow's own cost on the source (publishing the events + the re-reads);
# - redis-ferry's own CPU per event (/proc/PID/stat utime + stime, before/after);
# then its peak RSS (VmHWM) over the whole run, and `redis-ferry verify` (plain and --check-extra) after
# SIGINT (exit 130 expected) and a short settle for the load's TTLs, printed but never a failure.
#
# The baselines run first (after a short warm-up of the same load, so that they start on a key space as
# populated as the follow's runs do); a follow then copies everything and takes the same loads in turn.
#
# Memory run: a fresh source and target (the same N keys), a follow with --follow-queue FOLLOW_MEM_QUEUE
# and one with the default queue, each under the top rate of FOLLOW_RATES on FOLLOW_MEM_KEYS groups (many
# distinct keys), each with FOLLOW_MEM_FLAGS (default --rate 50000: unthrottled, the follow keeps up with
# any load these 2 cores can write, and its dirty set never holds more than a few thousand keys, so the
# bound would not show; slowed, the dirty keys pile up as behind a slow target). The peak RSS after the
# copy and over the load and the catch-up after it shows the dirty set bounded by --follow-queue (a small
# queue overflows into re-scans instead of growing: overflows and rescans count them); then how long the
# follow took to be caught up once the load stopped (at most FOLLOW_CATCHUP s) and verify --check-extra.
#
# Exits 1 (after the tables) if a load or a follow failed, or a follow did not exit 130 on SIGINT.
#
# Usage: scripts/bench-follow.sh [N]      N keys filled (default 100000); scripts/bench.sh [N] follow calls it
# Environment: FOLLOW_RATES (default "1000 5000 10000 20000 200000"; 200000 is close to what 2 cores
# allow here), FOLLOW_SECONDS per rate (15), FOLLOW_KEYS load key groups (10000), FOLLOW_MEM_KEYS
# (200000), FOLLOW_MEM_QUEUE (1000), FOLLOW_MEM_RATE (the top rate of FOLLOW_RATES), FOLLOW_MEM_FLAGS
# (--rate 50000; empty for none), FOLLOW_CATCHUP (180), FOLLOW_SETTLE seconds before verify (3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-100000}
FOLLOW_RATES=${FOLLOW_RATES:-1000 5000 10000 20000 200000}
FOLLOW_SECONDS=${FOLLOW_SECONDS:-15}
FOLLOW_KEYS=${FOLLOW_KEYS:-10000}
FOLLOW_MEM_KEYS=${FOLLOW_MEM_KEYS:-200000}
FOLLOW_MEM_QUEUE=${FOLLOW_MEM_QUEUE:-1000}
FOLLOW_SETTLE=${FOLLOW_SETTLE:-3}
FOLLOW_CATCHUP=${FOLLOW_CATCHUP:-180}
FOLLOW_MEM_FLAGS=${FOLLOW_MEM_FLAGS---rate 50000}
for v in "N=$N" "FOLLOW_SECONDS=$FOLLOW_SECONDS" "FOLLOW_KEYS=$FOLLOW_KEYS" "FOLLOW_MEM_KEYS=$FOLLOW_MEM_KEYS" \
    "FOLLOW_MEM_QUEUE=$FOLLOW_MEM_QUEUE" "FOLLOW_SETTLE=$FOLLOW_SETTLE" "FOLLOW_CATCHUP=$FOLLOW_CATCHUP" \
    $(printf 'FOLLOW_RATES=%s ' $FOLLOW_RATES); do
    case "${v#*=}" in
        '' | *[!0-9]* | 0)
            echo "error: ${v%%=*} must be whole numbers above 0 (got '${v#*=}')" >&2
            exit 2
            ;;
    esac
done
[ -n "${FOLLOW_RATES// /}" ] || { echo "error: FOLLOW_RATES is empty" >&2; exit 2; }
TOP_RATE=$(printf '%s\n' $FOLLOW_RATES | sort -n | tail -n 1)
FOLLOW_MEM_RATE=${FOLLOW_MEM_RATE:-$TOP_RATE}
case "$FOLLOW_MEM_RATE" in
    '' | *[!0-9]* | 0)
        echo "error: FOLLOW_MEM_RATE must be a whole number above 0 (got '$FOLLOW_MEM_RATE')" >&2
        exit 2
        ;;
esac

FERRY_SCRIPT=bench-follow
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

setup_pair
TICKS=$(getconf CLK_TCK)
problems=()

# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------

# Seconds of CPU the server on port $1 has used so far (user + system).
server_cpu() {
    redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

# Seconds of CPU (user + system) process $1 has used so far; the fields after "(comm) " of /proc/PID/stat.
proc_cpu() {
    sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$TICKS" '{ printf "%.2f", ($12 + $13) / hz }'
}

# A field of /proc/PID/status in kB (VmHWM, VmRSS).
proc_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# The Prometheus text of the running follow (curl, or bash's /dev/tcp where there is no curl).
metrics() {
    if command -v curl >/dev/null; then
        curl -sf --max-time 2 "http://127.0.0.1:$MPORT/metrics"
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$MPORT"
            printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            timeout 2 cat <&3 | tr -d '\r' | sed '1,/^$/d'
        )
    fi
}

# The value of metric $1 (the whole name, labels included), empty when the follow does not answer.
metric() {
    metrics 2>/dev/null | awk -v n="$1" '$1 == n { print $2; exit }' || true
}

# sample_lag FILE: every 100 ms, one line "EPOCH LAG_SECONDS DIRTY_KEYS" from the metrics, until killed.
sample_lag() {
    local next now d
    next=${EPOCHREALTIME/./}
    while :; do
        metrics 2>/dev/null | awk -v t="$EPOCHREALTIME" '
            $1 == "redis_ferry_dirty_oldest_seconds" { lag = $2 }
            $1 == "redis_ferry_dirty_keys" { dirty = $2 }
            END { if (lag != "") print t, lag, dirty }' || true
        next=$((next + 100000))
        now=${EPOCHREALTIME/./}
        d=$((next - now))
        if [ "$d" -gt 0 ]; then
            sleep "$(printf '0.%06d' "$d")"
        else
            next=$now
        fi
    done >"$1"
}

# The lag samples of FILE taken between T0 and T1: "p50_ms p99_ms max_ms max_dirty samples"
# (nearest-rank percentiles).
lag_stats() {
    awk -v t0="$2" -v t1="$3" '$1 >= t0 && $1 <= t1 { print $2 * 1000, $3 }' "$1" | sort -n | awk '
        { v[NR] = $1; if ($2 > dirty) dirty = $2 }
        END {
            if (NR == 0) { print "n/a n/a n/a n/a 0"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
            printf "%.0f %.0f %.0f %d %d\n", v[i50], v[i99], v[NR], dirty, NR
        }'
}

# Threads and pipeline depth for `ferry-tools load` at rate $1: enough to keep the schedule here.
load_shape() {
    awk -v r="$1" 'BEGIN {
        t = r <= 5000 ? 1 : (r <= 20000 ? 2 : 4)
        p = int(r / (t * 500)); if (p < 10) p = 10; if (p > 1000) p = 1000
        printf "--threads %d --pipeline %d", t, p }'
}

# The value of KEY=... in the file's last line.
field() {
    tail -n 1 "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# run_load NAME RATE GROUPS: `ferry-tools load` on the source for FOLLOW_SECONDS, the source's CPU
# before/after; leaves $TMP/NAME.{load,srccpu,t0,t1}. A failed load is a problem, not the end of the run.
run_load() {
    local name=$1 rate=$2 groups=$3 c0 c1 rc=0
    c0=$(server_cpu "$SRC")
    echo "$EPOCHREALTIME" >"$TMP/$name.t0"
    # shellcheck disable=SC2046 # the shape is words on purpose
    "$TOOLS" load --url "127.0.0.1:$SRC" --rate "$rate" --seconds "$FOLLOW_SECONDS" --keys "$groups" \
        $(load_shape "$rate") >"$TMP/$name.load" 2>"$TMP/$name.load.err" || rc=$?
    echo "$EPOCHREALTIME" >"$TMP/$name.t1"
    c1=$(server_cpu "$SRC")
    awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.6f", b - a }' >"$TMP/$name.srccpu"
    if [ "$rc" -ne 0 ]; then
        problems+=("load $name exited with $rc: $(tail -n 1 "$TMP/$name.load.err")")
        echo "ops=0 errors=0 seconds=0 ops_per_sec=0" >"$TMP/$name.load"
    fi
    echo "-- $name: $(cat "$TMP/$name.load"); source CPU $(cat "$TMP/$name.srccpu") s" >&2
}

# caught_up SECS: waits up to SECS for the follow's metrics to say phase following with no key dirty or
# in flight; prints the seconds it took, or ">SECS". Fails when the follow process ended.
caught_up() {
    local t0=$EPOCHREALTIME i
    for i in $(seq 1 $(($1 * 10))); do
        kill -0 "$FPID" 2>/dev/null || return 1
        if [ "$(metric 'redis_ferry_follow_phase{phase="following"}')" = 1 ] &&
            [ "$(metric redis_ferry_dirty_keys)" = 0 ] && [ "$(metric redis_ferry_dirty_in_flight)" = 0 ]; then
            awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", b - a }'
            return 0
        fi
        sleep 0.1
    done
    echo ">$1"
}

# start_follow NAME [FLAGS...]: a follow of SRC into DST in the background with --metrics on a free
# port (sets FPID and MPORT); returns once the metrics say phase following with nothing dirty.
start_follow() {
    local name=$1 i
    shift
    for i in $(seq 1 20); do
        MPORT=$((20000 + RANDOM % 40000))
        port_free "$MPORT" && break
    done
    "$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --follow --enable-notifications \
        --metrics "127.0.0.1:$MPORT" --progress 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    FPID=$!
    PIDS+=("$FPID")
    local took
    if ! took=$(caught_up 600); then
        echo "error: the follow $name ended before it was following; its stderr:" >&2
        tail -n 20 "$TMP/$name.err" >&2
        exit 1
    fi
    if [ "${took#>}" != "$took" ]; then
        echo "error: the follow $name was not following with nothing dirty after 600 s" >&2
        exit 1
    fi
    echo "-- follow $name (pid $FPID, metrics :$MPORT): following after $took s" >&2
}

# stop_follow NAME: SIGINT to the follow, waits for it; exit 130 is expected.
stop_follow() {
    local name=$1 rc=0 i
    kill -INT "$FPID"
    for i in $(seq 1 600); do
        kill -0 "$FPID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$FPID" 2>/dev/null; then
        problems+=("follow $name still ran 60 s after SIGINT: sent SIGTERM")
        kill -TERM "$FPID" 2>/dev/null || true
    fi
    wait "$FPID" || rc=$?
    forget_pid "$FPID"
    echo "$rc" >"$TMP/$name.rc"
    [ "$rc" -eq 130 ] || problems+=("follow $name exited with $rc on SIGINT (130 expected): $(tail -n 1 "$TMP/$name.err")")
    echo "-- follow $name: exit $rc; $(tail -n 1 "$TMP/$name.out")" >&2
}

# verify_line ARGS...: the last stdout line of `redis-ferry verify SRC DST ARGS...` and its exit code.
verify_line() {
    local rc=0
    "$FERRY" verify "127.0.0.1:$SRC" "127.0.0.1:$DST" "$@" >"$TMP/verify.out" 2>"$TMP/verify.err" || rc=$?
    echo "$(tail -n 1 "$TMP/verify.out") (exit $rc)"
}

# WARN and ERROR lines of a follow's stderr, counted by message (timestamps dropped), at most 8.
log_lines() {
    grep -E '^\[[^]]*Z (WARN|ERROR) *\]' "$1" | sed 's/^\[[^]]*Z //' | sort | uniq -c | sort -rn | head -n 8 || true
}

# ---------------------------------------------------------------------------------------------------
# 1) the rates, without and then with a follow
# ---------------------------------------------------------------------------------------------------

fill() {
    "$TOOLS" fill --url "127.0.0.1:$SRC" --keys "$N" --seed 1 >&2
}

echo "== filling the source with $N keys (mixed profile)" >&2
fill
SRC_KEYS=$(dbsize "$SRC")

echo "== warm-up: 3 s of the load at 20000/s (the baselines then start on a populated key space)" >&2
"$TOOLS" load --url "127.0.0.1:$SRC" --rate 20000 --seconds 3 --keys "$FOLLOW_KEYS" $(load_shape 20000) >&2
echo "== baseline: the load alone (no follow, notifications off), $FOLLOW_SECONDS s per rate: $FOLLOW_RATES" >&2
for r in $FOLLOW_RATES; do
    run_load "base-$r" "$r" "$FOLLOW_KEYS"
done

# sampled_load NAME RATE KEYS: run_load while the lag is sampled into $TMP/NAME.lag.
sampled_load() {
    sample_lag "$TMP/$1.lag" &
    local sampler=$!
    PIDS+=("$sampler")
    run_load "$@"
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    forget_pid "$sampler"
}

echo "== follow: copy --follow, then the same loads" >&2
start_follow main
COPY_HWM=$(proc_kb "$FPID" VmHWM)
for r in $FOLLOW_RATES; do
    e0=$(metric redis_ferry_events_total)
    f0=$(proc_cpu "$FPID")
    sampled_load "follow-$r" "$r" "$FOLLOW_KEYS"
    f1=$(proc_cpu "$FPID")
    e1=$(metric redis_ferry_events_total)
    echo "$((${e1:-0} - ${e0:-0}))" >"$TMP/follow-$r.events"
    awk -v a="$f0" -v b="$f1" 'BEGIN { printf "%.2f", b - a }' >"$TMP/follow-$r.ferrycpu"
    # Let the follow catch up before the next rate, so each window starts from nothing dirty.
    caught_up 30 >/dev/null || true
done
MAIN_HWM=$(proc_kb "$FPID" VmHWM)
MAIN_RSS=$(proc_kb "$FPID" VmRSS)
MAIN_COUNTERS="gaps=$(metric redis_ferry_follow_gaps_total) overflows=$(metric redis_ferry_follow_overflows_total) rescans=$(metric redis_ferry_follow_rescans_total)"
stop_follow main
echo "== settling $FOLLOW_SETTLE s (the load's TTLs), then verify" >&2
sleep "$FOLLOW_SETTLE"
VERIFY=$(verify_line)
VERIFY_EXTRA=$(verify_line --check-extra)

# ---------------------------------------------------------------------------------------------------
# 2) memory: --follow-queue FOLLOW_MEM_QUEUE against the default, many distinct keys at the top rate
# ---------------------------------------------------------------------------------------------------

mem_run() {
    local name=$1
    shift
    redis-cli -p "$SRC" flushall >/dev/null
    redis-cli -p "$DST" flushall >/dev/null
    fill
    # shellcheck disable=SC2086 # FOLLOW_MEM_FLAGS is words on purpose
    start_follow "$name" "$@" $FOLLOW_MEM_FLAGS
    proc_kb "$FPID" VmHWM >"$TMP/$name.copyhwm"
    # From here VmHWM counts the load and the catch-up (5 in clear_refs resets it to the current RSS).
    echo 5 >"/proc/$FPID/clear_refs" 2>/dev/null || true
    sampled_load "$name" "$FOLLOW_MEM_RATE" "$FOLLOW_MEM_KEYS"
    echo "$(metric redis_ferry_follow_overflows_total) $(metric redis_ferry_follow_rescans_total)" >"$TMP/$name.over"
    caught_up "$FOLLOW_CATCHUP" >"$TMP/$name.catchup" || echo "ended" >"$TMP/$name.catchup"
    echo "-- $name: caught up $(cat "$TMP/$name.catchup") s after the load" >&2
    proc_kb "$FPID" VmHWM >"$TMP/$name.hwm"
    stop_follow "$name"
    sleep "$FOLLOW_SETTLE"
    verify_line --check-extra >"$TMP/$name.verify"
}

echo "== memory: --follow-queue $FOLLOW_MEM_QUEUE, then the default (both ${FOLLOW_MEM_FLAGS:-unthrottled}), load at" \
    "$FOLLOW_MEM_RATE/s on $FOLLOW_MEM_KEYS groups" >&2
mem_run "mem-small" --follow-queue "$FOLLOW_MEM_QUEUE"
mem_run "mem-default"

# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------

echo
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "redis: $(redis-server --version)"
echo "data: $SRC_KEYS keys (fill, mixed profile, seed 1); load: $FOLLOW_SECONDS s per rate on $FOLLOW_KEYS groups" \
    "(x3 keys), seed 1; lag sampled every 100 ms"
echo "follow: $(tail -n 1 "$TMP/main.out") (exit $(cat "$TMP/main.rc"))"
echo
echo "1) lag and CPU per keyspace event under a steady load (src = the source redis-server; none = the same"
echo "   load without a follow; follow_own = with - none: notifications + the follow's re-reads)"
printf "%8s %9s %8s %8s %8s %8s %11s %11s %13s %12s\n" rate achieved events/s p50_ms p99_ms max_ms \
    src_us/ev src_none_us follow_own_us ferry_us/ev
for r in $FOLLOW_RATES; do
    read -r p50 p99 max _ _ < <(lag_stats "$TMP/follow-$r.lag" "$(cat "$TMP/follow-$r.t0")" "$(cat "$TMP/follow-$r.t1")")
    awk -v r="$r" -v ops="$(field "$TMP/follow-$r.load" ops)" -v kps="$(field "$TMP/follow-$r.load" ops_per_sec)" \
        -v secs="$(field "$TMP/follow-$r.load" seconds)" -v bops="$(field "$TMP/base-$r.load" ops)" \
        -v ev="$(cat "$TMP/follow-$r.events")" -v src="$(cat "$TMP/follow-$r.srccpu")" \
        -v base="$(cat "$TMP/base-$r.srccpu")" -v ferry="$(cat "$TMP/follow-$r.ferrycpu")" \
        -v p50="$p50" -v p99="$p99" -v max="$max" 'BEGIN {
            if (ev <= 0 || bops <= 0) { with = none = own = fe = "n/a" }
            else {
                with = sprintf("%.2f", src * 1e6 / ev)
                none = sprintf("%.2f", base * (ops / bops) * 1e6 / ev)
                own = sprintf("%.2f", with - none)
                fe = sprintf("%.2f", ferry * 1e6 / ev)
            }
            printf "%8d %9.0f %8.0f %8s %8s %8s %11s %11s %13s %12s\n", r, kps, (secs > 0 ? ev / secs : 0), \
                p50, p99, max, with, none, own, fe
        }'
done
echo
awk -v c="$COPY_HWM" -v h="$MAIN_HWM" -v s="$MAIN_RSS" 'BEGIN {
    printf "redis-ferry peak RSS (VmHWM): %.1f MB over the whole run (%.1f MB after the copy; %.1f MB resident at the end)\n", h / 1024, c / 1024, s / 1024 }'
echo "follow counters at the end: $MAIN_COUNTERS"
echo "verify:               $VERIFY"
echo "verify --check-extra: $VERIFY_EXTRA"
echo "follow stderr, WARN/ERROR lines by count:"
log_lines "$TMP/main.err" | sed 's/^/   /'
echo
echo "2) memory: a fresh follow (${FOLLOW_MEM_FLAGS:-unthrottled}) under load at $FOLLOW_MEM_RATE/s on $FOLLOW_MEM_KEYS groups"
echo "   (x3 distinct keys) for $FOLLOW_SECONDS s; follow_peak = VmHWM over the load and the catch-up after it;"
echo "   max_dirty, lag and overflows/rescans over the load window; catch_up_s = from the load's end to nothing dirty"
printf "%-22s %9s %13s %15s %10s %8s %8s %10s %8s %11s\n" follow_queue achieved copy_peak_mb follow_peak_mb \
    max_dirty p99_ms max_ms overflows rescans catch_up_s
for name in mem-small mem-default; do
    label=$([ "$name" = mem-small ] && echo "--follow-queue $FOLLOW_MEM_QUEUE" || echo "default (1000000)")
    read -r _ p99 max dirty _ < <(lag_stats "$TMP/$name.lag" "$(cat "$TMP/$name.t0")" "$(cat "$TMP/$name.t1")")
    read -r over rescans <"$TMP/$name.over"
    awk -v label="$label" -v kps="$(field "$TMP/$name.load" ops_per_sec)" -v c="$(cat "$TMP/$name.copyhwm")" \
        -v h="$(cat "$TMP/$name.hwm")" -v dirty="$dirty" -v p99="$p99" -v max="$max" -v over="${over:-?}" \
        -v rs="${rescans:-?}" -v cu="$(cat "$TMP/$name.catchup")" 'BEGIN {
            printf "%-22s %9.0f %13.1f %15.1f %10s %8s %8s %10s %8s %11s\n", label, kps, c / 1024, h / 1024, dirty, \
                p99, max, over, rs, cu }'
done
for name in mem-small mem-default; do
    echo "$name: $(tail -n 1 "$TMP/$name.out") (exit $(cat "$TMP/$name.rc"))"
    echo "$name verify --check-extra: $(cat "$TMP/$name.verify")"
    log_lines "$TMP/$name.err" | sed 's/^/   /'
done

fail_on_problems "WARNING"
