#!/usr/bin/env bash
# Runs the redis-ferry test suite: makes sure redis-server, redis-cli and faketime exist (installing
# Debian's packages when they do not) and a Python venv for the Kubernetes manifest check, builds every
# target, then runs every test. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -- --test-threads 2`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }

# redis-server and redis-cli for the servers every test starts; faketime for the tests that run redis-ferry
# with its clock moved (tests/clocks).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
    || ! command -v faketime >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: redis-server/redis-cli missing and not root (no sudo to install them)" >&2
            exit 1
        fi
    fi
    step "installing redis-server, redis-tools and faketime with apt-get"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools faketime
else
    step "using $(redis-server --version | head -n 1)"
fi

# A Python venv with PyPI's kubernetes-validate (it ships the Kubernetes schemas, so it works offline), for
# tests/kubernetes, which checks deploy/kubernetes/. Made once in .venv-tests (git ignores it).
venv=.venv-tests
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    step "making $venv with kubernetes-validate (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
export FERRY_PYTHON="$PWD/$venv/bin/python"

step "cargo build --all-targets"
cargo build --all-targets

step "cargo test $*"
cargo test "$@"
