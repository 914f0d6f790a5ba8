#!/usr/bin/env bash
# demo.sh: redis-ferry end to end on a fresh machine that has only the Rust toolchain.
# Installs redis-server/redis-cli if missing, builds the release binaries, starts two throwaway
# redis-server processes on free 127.0.0.1 ports, fills the source with a mixed key set
# (ferry-tools fill), copies it with `redis-ferry copy`, checks the copy with `redis-ferry verify`
# and DBSIZE, and prints the copy's summary line last. Exits non-zero if anything disagreed.
# It never touches a server it did not start; the servers and the temp dir go away on any exit.
#
# Usage: scripts/demo.sh            (DEMO_KEYS=N to change the key count, default 100000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEYS=${DEMO_KEYS:-100000}

FERRY_SCRIPT=demo
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

setup_pair

echo "== filling the source with $KEYS mixed keys" >&2
"$TOOLS" fill --url "redis://127.0.0.1:$SRC" --keys "$KEYS" --seed 1 --profile mixed

echo "== redis-ferry copy" >&2
copy_rc=0
"$FERRY" copy "127.0.0.1:$SRC" "127.0.0.1:$DST" --progress 1 --errors "$TMP/errors.csv" \
    >"$TMP/copy.out" || copy_rc=$?
cat "$TMP/copy.out"
summary=$(tail -n 1 "$TMP/copy.out")
if [ -s "$TMP/errors.csv" ]; then
    echo "== first rows of the error CSV" >&2
    head -n 11 "$TMP/errors.csv" >&2
fi

echo "== redis-ferry verify" >&2
verify_rc=0
"$FERRY" verify "127.0.0.1:$SRC" "127.0.0.1:$DST" || verify_rc=$?

src_keys=$(dbsize "$SRC")
dst_keys=$(dbsize "$DST")
echo "source dbsize=$src_keys target dbsize=$dst_keys"

# The promise: the buckets add up to the number scanned, and everything scanned was copied here.
field() {
    local v
    v=$(printf '%s\n' "$summary" | tr ' ' '\n' | sed -n "s/^$1=\([0-9]*\)$/\1/p")
    echo "${v:-0}"
}
scanned=$(printf '%s\n' "$summary" | tr ' ' '\n' | sed -n 's/^scanned=//p')
copied=$(field copied)
buckets=$(($(field copied) + $(field skipped) + $(field expired) + $(field failed)))

problems=()
[ "$copy_rc" -eq 0 ] || problems+=("copy exited with $copy_rc")
[ "$verify_rc" -eq 0 ] || problems+=("verify exited with $verify_rc")
[ "$src_keys" = "$dst_keys" ] || problems+=("dbsize differs: source $src_keys, target $dst_keys")
[ "$scanned" = "$buckets" ] || problems+=("buckets add up to $buckets, scanned=$scanned")
[ "$copied" = "$src_keys" ] || problems+=("copied=$copied but the source holds $src_keys keys")

echo
echo "$summary"
fail_on_problems "DEMO FAILED"
echo "demo ok: $src_keys keys copied and verified" >&2
