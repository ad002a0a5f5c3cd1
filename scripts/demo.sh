#!/usr/bin/env bash
# A local nutcracker demo: two redis-server and two memcached on free loopback
# ports, nutcracker in front of them (redis pool on 127.0.0.1:22121,
# memcached pool on 127.0.0.1:22122, stats on 22222 or the next free port).
# Ctrl-C stops everything. Set DEMO_SECONDS=N to stop by itself after N s.
#
# Run it as `make demo`. As root on Debian/Ubuntu it installs a Rust
# toolchain, redis-server and memcached with apt-get when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf 'demo: %s\n' "$*"; }

# Rust (Cargo.toml's rust-version), redis-server and memcached: installed
# with apt-get as root when missing, else a message and exit 1.
bash scripts/install-deps.sh --demo

# Something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nothing listens on, starting the search at $1.
free_port() {
    local p=$1
    while listening "$p"; do p=$((p + 1)); done
    echo "$p"
}

wait_listening() {
    local i=0
    until listening "$1"; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            say "nothing came up on port $1" >&2
            return 1
        fi
        sleep 0.1
    done
}

for p in 22121 22122; do
    if listening "$p"; then
        say "port $p is in use (another nutcracker?); stop it first" >&2
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nutcracker-demo.XXXXXX")
pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    say "stopped everything"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

say "building (cargo build --release)"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/nutcracker"

# Backends run in the foreground as our children; their pids are in $TMP.
R1=$(free_port 31001)
redis-server --bind 127.0.0.1 --port "$R1" --save '' --appendonly no --dir "$TMP" \
    --logfile "$TMP/redis-$R1.log" &
pids+=($!); echo $! >"$TMP/redis-$R1.pid"
wait_listening "$R1"
R2=$(free_port $((R1 + 1)))
redis-server --bind 127.0.0.1 --port "$R2" --save '' --appendonly no --dir "$TMP" \
    --logfile "$TMP/redis-$R2.log" &
pids+=($!); echo $! >"$TMP/redis-$R2.pid"

# memcached refuses to run as root without -u.
mc_user=()
[ "$(id -u)" = 0 ] && mc_user=(-u nobody)
M1=$(free_port 31101)
memcached -l 127.0.0.1 -p "$M1" -U 0 -m 64 "${mc_user[@]}" &
pids+=($!); echo $! >"$TMP/memcached-$M1.pid"
wait_listening "$M1"
M2=$(free_port $((M1 + 1)))
memcached -l 127.0.0.1 -p "$M2" -U 0 -m 64 "${mc_user[@]}" &
pids+=($!); echo $! >"$TMP/memcached-$M2.pid"
wait_listening "$R2"
wait_listening "$M2"

STATS=$(free_port 22222)
cat >"$TMP/nutcracker.yml" <<EOF
demo_redis:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  timeout: 400
  servers:
   - 127.0.0.1:$R1:1
   - 127.0.0.1:$R2:1

demo_memcached:
  listen: 127.0.0.1:22122
  hash: fnv1a_64
  distribution: ketama
  timeout: 400
  servers:
   - 127.0.0.1:$M1:1
   - 127.0.0.1:$M2:1
EOF

"$BIN" -c "$TMP/nutcracker.yml" -s "$STATS" -a 127.0.0.1 -i 1000 &
nc_pid=$!
pids+=("$nc_pid")
wait_listening 22121
wait_listening 22122

cat <<EOF

nutcracker is running (pid $nc_pid), config: $TMP/nutcracker.yml
  backends: redis 127.0.0.1:$R1 127.0.0.1:$R2, memcached 127.0.0.1:$M1 127.0.0.1:$M2

Try, from another terminal:
  redis-cli -p 22121 set greeting hello
  redis-cli -p 22121 get greeting
  printf 'set k 0 0 1\r\nv\r\n' | nc -N 127.0.0.1 22122
  printf 'get k\r\n' | nc -N 127.0.0.1 22122
  curl -s localhost:$STATS        # stats JSON

Press Ctrl-C to stop everything.
EOF
# -N (close after the input, so nc returns once the reply is in) is
# OpenBSD netcat's; Debian's netcat-traditional has -q1 for the same.
command -v nc >/dev/null 2>&1 || say "(nc is not installed: apt-get install netcat-openbsd)"
command -v redis-cli >/dev/null 2>&1 || say "(redis-cli is not installed: apt-get install redis-tools)"

if [ -n "${DEMO_SECONDS:-}" ]; then
    ( sleep "$DEMO_SECONDS"; kill -TERM "$nc_pid" 2>/dev/null ) &
    pids+=($!)
fi
status=0
wait "$nc_pid" || status=$?
say "nutcracker exited with status $status"
