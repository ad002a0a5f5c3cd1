#!/usr/bin/env bash
# Installs the pinned client libraries and tools that tests/clients.rs drives
# through the proxy, into a private environment inside the build tree:
#
#   <dir>/clients-venv          Python venv with requirements.txt
#   <dir>/clients-node          node_modules from package.json + package-lock.json
#   redis-benchmark, redis-cli, memcflush, memcstat from Debian's apt (as root)
#
# <dir> is the first argument, default <repo>/target. Nothing goes into the
# system site-packages or the source tree. A second run is quick: each part
# is skipped while a stamp holding the hash of its manifest matches.
#
# Exit status: 0 ready; 75 (EX_TEMPFAIL) a package registry could not be
# reached (the tests skip then, and say so); 1 anything else (the tests fail).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${1:-$root/target}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
log="$dir/clients-setup.log"

# Parallel test processes (or two cargo runs) must not install at once.
exec 9>"$dir/clients-setup.lock"
if ! flock -w 900 9; then
    echo "clients-setup: timed out waiting for another setup to finish" >&2
    exit 1
fi

say() { echo "clients-setup: $*" >&2; }

# Network failures look alike in pip, npm and apt: name resolution, refused
# or timed-out connections, retries exhausted. Anything else is a real error.
net_error='NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|Network is unreachable|Connection refused|timed out|ConnectTimeout|ReadTimeout|ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|network request to .* failed|Could not resolve|Temporary failure resolving|Failed to fetch|Unable to connect'

# Runs "$@" with output in $log; on failure exits 75 when the log shows a
# network failure, 1 otherwise.
run_logged() {
    local what="$1"
    shift
    if "$@" >"$log" 2>&1; then
        return 0
    fi
    if grep -Eq "$net_error" "$log"; then
        say "UNREACHABLE: the $what registry could not be reached; client tests skip"
        grep -E "$net_error" "$log" | head -3 >&2
        exit 75
    fi
    say "installing from the $what registry failed (log: $log):"
    tail -20 "$log" >&2
    exit 1
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python ---------------------------------------------------------------
venv="$dir/clients-venv"
want="$(hash_of "$here/requirements.txt")"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python clients into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Bounded retries and timeouts: an unreachable index fails in about a
    # minute instead of hanging the test run.
    run_logged PyPI "$venv/bin/pip" install --no-input --disable-pip-version-check \
        --retries 2 --timeout 30 -r "$here/requirements.txt"
    echo "$want" >"$venv/.stamp"
fi

# --- Node -----------------------------------------------------------------
node_dir="$dir/clients-node"
want="$(hash_of "$here/package.json" "$here/package-lock.json")"
if [ "$(cat "$node_dir/.stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Node clients into $node_dir"
    command -v npm >/dev/null 2>&1 || { say "npm not found; install Node.js 20+"; exit 1; }
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
    run_logged npm npm ci --prefix "$node_dir" --no-audit --no-fund \
        --fetch-retries 2 --fetch-timeout 30000
    echo "$want" >"$node_dir/.stamp"
fi

# --- Debian tools -----------------------------------------------------------
apt_pkgs=()
command -v redis-benchmark >/dev/null 2>&1 || apt_pkgs+=(redis-tools)
command -v redis-cli >/dev/null 2>&1 || apt_pkgs+=(redis-tools)
command -v memcflush >/dev/null 2>&1 || apt_pkgs+=(libmemcached-tools)
command -v memcstat >/dev/null 2>&1 || apt_pkgs+=(libmemcached-tools)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    mapfile -t apt_pkgs < <(printf '%s\n' "${apt_pkgs[@]}" | sort -u)
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${apt_pkgs[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        run_logged apt apt-get -o Acquire::Retries=1 -o Acquire::http::Timeout=30 update -q
        run_logged apt apt-get -o DPkg::Lock::Timeout=300 install -y -q \
            --no-install-recommends "${apt_pkgs[@]}"
    else
        say "missing ${apt_pkgs[*]}: install them (e.g. sudo apt-get install ${apt_pkgs[*]})"
        exit 1
    fi
fi

echo "python=$venv/bin/python"
echo "node_path=$node_dir/node_modules"
