#!/usr/bin/env bash
# Long soak test: mixed redis and memcached traffic through nutcracker while
# backends are killed and restarted every few seconds. Prints a table once a
# second (time, ops, errors, failures, RSS, fds, mbufs in use, clients,
# queued requests) and, at the end, checks that every request got a correct
# answer or an error reply and that nothing leaked (tests/soak.rs).
#
#   scripts/soak.sh                      # 600 s
#   NC_SOAK_SECONDS=3600 scripts/soak.sh # an hour
#
# Needs redis-server and memcached in PATH (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export NC_SOAK_SECONDS="${NC_SOAK_SECONDS:-600}"
exec "${CARGO:-cargo}" test --release --test soak -- --ignored --nocapture "$@"
