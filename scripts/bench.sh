#!/usr/bin/env bash
# `make bench` (pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS=--quick):
# measures what nutcracker costs against the servers it fronts. The benchmark
# itself is benches/bench.rs; it starts its own redis-server and memcached
# processes on free loopback ports and stops them at the end.
#
# Needs redis-server, redis-benchmark (Debian package redis-tools),
# memcached and haproxy (the L4 relay measured as the floor); as root on
# Debian/Ubuntu they are installed with apt-get when missing. Without haproxy
# the relay is left out of the report. NUTCRACKER_BIN2=/path/to/nutcracker
# runs a second binary (e.g. C twemproxy) in the same rounds.
# Options: scripts/bench.sh --help
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
# Debian installs it in /usr/sbin, outside a normal user's PATH.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# perf counts the system calls per request (without it, /proc/<pid>/io).
command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "bench: missing ${missing[*]}; install them first, e.g.: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

cargo build --release
cargo bench --bench bench -- "$@"
# Issue 17: one huge client or one flooding backend against everyone else
# (wall-clock figures, kept out of the test suite).
exec cargo bench --bench adversarial
