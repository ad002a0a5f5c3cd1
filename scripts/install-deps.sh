#!/usr/bin/env bash
# Installs what the test suite needs besides Rust: redis-server, memcached and
# redis-cli (the engine tests start real backends on loopback ports).
# Uses apt-get when running as root on Debian/Ubuntu; otherwise only says what
# is missing, and the tests that need a backend will fail.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "install-deps: missing ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]})" >&2
    echo "install-deps: the tests that start real backends will fail without them" >&2
fi
