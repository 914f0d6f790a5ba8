# lib.sh: what scripts/demo.sh and scripts/bench.sh share: install redis-server when missing, start
# throwaway servers on free 127.0.0.1 ports in a temp dir, and stop exactly those servers (and remove
# the temp dir) on any exit. Source it after `set -euo pipefail`, with FERRY_SCRIPT naming the caller.
# It never touches a server it did not start.
PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/redis-ferry-${FERRY_SCRIPT:-script}.XXXXXX")

cleanup() {
    local rc=$?
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_redis() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    echo "== installing redis-server and redis-tools" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
}

# True when nothing accepts connections on 127.0.0.1:$1.
port_free() {
    ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts a throwaway redis-server on a free port, sets STARTED_PORT and records the pid in PIDS at once
# (so the trap can kill it). A port grabbed by someone else between the check and the bind makes the
# server exit; then the next candidate is tried. With the argument `cluster` it starts a cluster node
# (cluster-enabled, its nodes.conf in the temp dir, its bus port PORT+10000 free too), not yet in a cluster.
start_server() {
    local attempt port pid i extra=() span=40000
    [ "${1:-}" = cluster ] && span=30000
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % span))
        port_free "$port" || continue
        if [ "${1:-}" = cluster ]; then
            port_free $((port + 10000)) || continue
            extra=(--cluster-enabled yes --cluster-config-file "$TMP/nodes-$port.conf")
        fi
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$TMP" --dbfilename "dump-$port.rdb" --daemonize no \
            --logfile "$TMP/redis-$port.log" ${extra[@]+"${extra[@]}"} &
        pid=$!
        PIDS+=("$pid")
        for i in $(seq 1 100); do
            # Our own server answers with our pid, not some other process that won the port.
            if redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | grep -qx "process_id:$pid"; then
                STARTED_PORT=$port
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "error: could not start redis-server on a free port; last log:" >&2
    cat "$TMP"/redis-*.log >&2 2>/dev/null || true
    return 1
}

dbsize() {
    redis-cli -p "$1" dbsize
}

# GNU time (for peak RSS with -v), installed from Debian's package when missing.
install_time() {
    if [ -x /usr/bin/time ]; then
        return
    fi
    echo "== installing GNU time" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y time
}

# Drops a finished process from PIDS, so the exit trap never signals a pid the system may have reused.
forget_pid() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

# Installs redis-server when missing, builds the release binaries and starts the two throwaway servers:
# sets FERRY and TOOLS (the binaries) and SRC and DST (the ports).
setup_pair() {
    install_redis
    echo "== building (cargo build --release)" >&2
    cargo build --release
    FERRY=${CARGO_TARGET_DIR:-target}/release/redis-ferry
    TOOLS=${CARGO_TARGET_DIR:-target}/release/ferry-tools
    start_server
    SRC=$STARTED_PORT
    start_server
    DST=$STARTED_PORT
    echo "== source 127.0.0.1:$SRC, target 127.0.0.1:$DST ($(redis-server --version | cut -d' ' -f3))" >&2
}

# Exits 1 after printing each entry of the caller's `problems` array as "PREFIX: entry" on standard
# error; returns when the array is empty.
fail_on_problems() {
    local p
    [ "${#problems[@]}" -eq 0 ] && return 0
    echo >&2
    for p in "${problems[@]}"; do
        echo "$1: $p" >&2
    done
    exit 1
}
