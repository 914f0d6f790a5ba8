#!/usr/bin/env bash
# bench-shards.sh: one copy of a cluster split over SHARDS processes (`--shard I/SHARDS`, as the pods of
# the Kubernetes Indexed Job in deploy/kubernetes do) against one process copying it whole, side by side
# in one run on the same data: a source cluster and a target cluster of 3 primaries each (no replicas),
# throwaway redis-server processes on free 127.0.0.1 ports, loaded with N keys of `ferry-tools fill`'s
# mixed profile (filled into a standalone server, then copied into the source cluster by redis-ferry).
# For each case, from an empty target: wall-clock keys/s over the whole copy, the keys/s each shard
# process reported (its --report), each process's peak RSS (GNU time -v), and the CPU seconds each
# source primary spent (INFO CPU, before/after). The shards' reports are merged with `report merge`,
# whose summary must count every key; the target must end with as many keys as the source.
# Exits 1 if a copy failed or a count disagreed (after printing the table).
#
# What it shows on a small machine is the cost model, not a speed-up: every process and every server
# here share the same few cores, so SHARDS processes cannot go faster than one, while on separate
# machines (pods on other nodes, primaries on their own hosts) each shard's rate adds up until the
# source primaries' CPU is the limit. The per-primary CPU columns are what to size that on.
#
# Usage: scripts/bench-shards.sh [N]      (scripts/bench.sh N shards calls it)
# Environment: SHARDS (default 3), the number of processes of the split case.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-300000}
SHARDS=${SHARDS:-3}
for v in "N=$N" "SHARDS=$SHARDS"; do
    case "${v#*=}" in
        '' | *[!0-9]* | 0)
            echo "error: ${v%%=*} must be a whole number above 0 (got '${v#*=}')" >&2
            exit 2
            ;;
    esac
done

FERRY_SCRIPT=bench-shards
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

install_redis
install_time
echo "== building (cargo build --release)" >&2
cargo build --release
FERRY=${CARGO_TARGET_DIR:-target}/release/redis-ferry
TOOLS=${CARGO_TARGET_DIR:-target}/release/ferry-tools

# make_cluster VAR: starts 3 cluster nodes, joins them into one cluster (slots as redis-cli splits them)
# and sets VAR to the space-separated list of their ports once every node says cluster_state:ok.
make_cluster() {
    local ports=() i port
    for i in 1 2 3; do
        start_server cluster
        ports+=("$STARTED_PORT")
    done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$TMP/create-$1.log"
    for i in $(seq 1 200); do
        local ok=0
        for port in "${ports[@]}"; do
            redis-cli -p "$port" cluster info | tr -d '\r' | grep -qx 'cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" -eq 3 ] && break
        sleep 0.1
    done
    printf -v "$1" '%s' "${ports[*]}"
}

# The sum of DBSIZE over the nodes given.
cluster_keys() {
    local total=0 port
    for port in "$@"; do
        total=$((total + $(dbsize "$port")))
    done
    echo "$total"
}

# The CPU seconds (user + system) of each node given, space-separated.
nodes_cpu() {
    local port out=()
    for port in "$@"; do
        out+=("$(redis-cli -p "$port" info cpu | tr -d '\r' |
            awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.3f", s }')")
    done
    echo "${out[*]}"
}

make_cluster SRC_NODES
make_cluster DST_NODES
read -r -a src_nodes <<<"$SRC_NODES"
read -r -a dst_nodes <<<"$DST_NODES"
SRC_URL="redis://127.0.0.1:${src_nodes[0]}"
DST_URL="redis://127.0.0.1:${dst_nodes[0]}"
echo "== source cluster: $SRC_NODES; target cluster: $DST_NODES ($(redis-server --version | cut -d' ' -f3))" >&2

start_server
STAGING=$STARTED_PORT
echo "== filling $N keys (mixed profile) and loading them into the source cluster" >&2
"$TOOLS" fill --url "redis://127.0.0.1:$STAGING" --keys "$N" --seed 1 >&2
"$FERRY" copy "redis://127.0.0.1:$STAGING" "$SRC_URL" --progress 0 >"$TMP/load.out"
SRC_KEYS=$(cluster_keys "${src_nodes[@]}")
echo "== source cluster holds $SRC_KEYS keys ($(tail -n 1 "$TMP/load.out"))" >&2

problems=()

# run_shards NAME K: empties the target, runs K copy processes at once (K = 0: one process without
# --shard), each under GNU time with its own --report, and leaves NAME's measurements in $TMP.
run_shards() {
    local name=$1 k=$2 i pids=() rc
    for port in "${dst_nodes[@]}"; do
        redis-cli -p "$port" flushall >/dev/null
    done
    local cpu0 cpu1 t0 t1
    cpu0=$(nodes_cpu "${src_nodes[@]}")
    t0=$(date +%s.%N)
    for i in $(seq 0 $((k > 0 ? k - 1 : 0))); do
        local shard=()
        [ "$k" -gt 0 ] && shard=(--shard "$i/$k")
        /usr/bin/time -v -o "$TMP/$name.$i.time" "$FERRY" copy "$SRC_URL" "$DST_URL" --progress 0 \
            ${shard[@]+"${shard[@]}"} --report "$TMP/$name.$i.json" \
            >"$TMP/$name.$i.out" 2>"$TMP/$name.$i.err" &
        pids+=("$!")
        PIDS+=("$!")
    done
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if [ "$rc" -ne 0 ]; then
            problems+=("$name process $i exited with $rc: $(tail -n 1 "$TMP/$name.$i.err")")
        fi
    done
    t1=$(date +%s.%N)
    cpu1=$(nodes_cpu "${src_nodes[@]}")
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' >"$TMP/$name.wall"
    paste -d' ' <(tr ' ' '\n' <<<"$cpu0") <(tr ' ' '\n' <<<"$cpu1") |
        awk '{ printf "%s%.2f", (NR > 1 ? "/" : ""), $2 - $1 }' >"$TMP/$name.cpu"
    local got
    got=$(cluster_keys "${dst_nodes[@]}")
    [ "$got" -eq "$SRC_KEYS" ] || problems+=("$name: the target holds $got keys, the source $SRC_KEYS")
    echo "-- $name: $(cat "$TMP/$name.wall") s, target $got keys" >&2
}

run_shards one 0
run_shards split "$SHARDS"

# The merged summary of the split case must account for every key of the source.
merge_rc=0
"$FERRY" report merge "$TMP"/split.*.json >"$TMP/merge.out" 2>"$TMP/merge.err" || merge_rc=$?
[ "$merge_rc" -eq 0 ] || problems+=("report merge exited with $merge_rc: $(cat "$TMP/merge.err")")
merged_scanned=$(tr ' ' '\n' <"$TMP/merge.out" | sed -n 's/^scanned=//p')
[ "${merged_scanned:-0}" -eq "$SRC_KEYS" ] ||
    problems+=("report merge counted scanned=${merged_scanned:-?}, the source holds $SRC_KEYS keys")

# One table row per case: whole-copy keys/s, its ratio to one process, the per-process figures.
row() {
    local name=$1 label=$2 base=$3
    local per_kps per_rss
    per_kps=$(for f in "$TMP/$name".*.json; do sed -n 's/.*"keys_per_sec": *\([0-9.]*\).*/\1/p' "$f" | head -n 1; done |
        awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 }')
    per_rss=$(for f in "$TMP/$name".*.time; do
        sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$f"
    done | awk '{ printf "%s%.1f", (NR > 1 ? "/" : ""), $1 / 1024 }')
    awk -v label="$label" -v keys="$SRC_KEYS" -v wall="$(cat "$TMP/$name.wall")" -v base="$base" \
        -v per="$per_kps" -v rss="$per_rss" -v cpu="$(cat "$TMP/$name.cpu")" 'BEGIN {
            kps = wall > 0 ? keys / wall : 0
            ratio = base > 0 ? kps / base : 1
            printf "%-24s %10.0f %8.2fx  %-26s %-18s %s\n", label, kps, ratio, per, rss, cpu
        }'
}
ONE_KPS=$(awk -v k="$SRC_KEYS" -v w="$(cat "$TMP/one.wall")" 'BEGIN { printf "%.3f", (w > 0 ? k / w : 0) }')

echo
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "redis: $(redis-server --version)"
echo "data: $SRC_KEYS keys, profile mixed, seed 1, on 3 source primaries (keys per primary: $(
    for p in "${src_nodes[@]}"; do dbsize "$p"; done | paste -sd/))"
echo "one:    $(tail -n 1 "$TMP/one.0.out")"
echo "merged: $(cat "$TMP/merge.out")"
echo
printf "%-24s %10s %9s  %-26s %-18s %s\n" case keys/s vs_one per_process_keys/s per_process_rss_mb \
    src_cpu_s_per_primary
row one "one process" "$ONE_KPS"
row split "$SHARDS processes (--shard)" "$ONE_KPS"

fail_on_problems "WARNING"
