#!/usr/bin/env bash
# Installs what building and testing need and a fresh machine may lack:
#
#   - a Rust toolchain (cargo, rustc) at least as new as `rust-version` in
#     Cargo.toml. Debian 12's own `cargo`/`rustc` packages are 1.63, far too
#     old; its `cargo-web`/`rustc-web` packages (bookworm-security) carry a
#     current one and install /usr/bin/cargo and /usr/bin/rustc.
#   - redis-server, memcached and redis-cli (the engine tests start real
#     backends on loopback ports); with --demo only redis-server and
#     memcached, which is what `make demo` runs.
#
# Uses apt-get when running as root on Debian/Ubuntu. Otherwise it says what
# to install: a missing or too old toolchain is an error (exit 1), since
# nothing builds without it; missing backends only a warning (the tests that
# need them fail). When everything is there it runs nothing but
# `cargo --version` and `rustc --version`.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=0
[ "${1:-}" = --demo ] && demo=1

say() { printf 'install-deps: %s\n' "$*" >&2; }

# The toolchain Cargo.toml asks for, e.g. 1.88.
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
need_rust=${need_rust:?no rust-version in Cargo.toml}

# Version of tool $1 ("cargo 1.96.0 (...)" -> 1.96.0), empty when missing.
tool_version() {
    command -v "$1" >/dev/null 2>&1 || return 0
    "$1" --version 2>/dev/null | sed -n 's/^[a-z]* \([0-9][0-9.]*\).*/\1/p' | head -n 1
}

# True when version $1 is at least version $2.
at_least() {
    [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

rust_ok() {
    at_least "$(tool_version cargo)" "$need_rust" && at_least "$(tool_version rustc)" "$need_rust"
}

describe_rust() {
    local c r
    c=$(tool_version cargo)
    r=$(tool_version rustc)
    printf 'cargo %s, rustc %s' "${c:-missing}" "${r:-missing}"
}

as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    [ "$apt_updated" = 1 ] || apt-get update -q
    apt_updated=1
    apt-get install -y -q --no-install-recommends "$@"
}

if ! rust_ok; then
    if as_root_with_apt; then
        say "Rust $need_rust or newer needed ($(describe_rust)); installing cargo-web rustc-web"
        # They conflict with (and so replace) Debian's old cargo/rustc. Where
        # no such package exists (not Debian 12) this fails and the message
        # below says what to do instead.
        apt_install cargo-web rustc-web || true
        hash -r
    fi
    if ! rust_ok; then
        say "Rust $need_rust or newer is needed to build nutcracker ($(describe_rust))."
        say "On Debian 12, as root: apt-get install cargo-web rustc-web (from bookworm-security;"
        say "bookworm's own 1.85 is too old for the test client); elsewhere: https://rustup.rs"
        say "(then make sure ~/.cargo/bin comes first in PATH)."
        exit 1
    fi
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
if [ "$demo" = 0 ]; then
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if as_root_with_apt; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}"
    elif [ "$demo" = 1 ]; then
        say "please install ${missing[*]} first, e.g.: sudo apt-get install ${missing[*]}"
        exit 1
    else
        say "missing ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]})"
        say "the tests that start real backends will fail without them"
    fi
fi
