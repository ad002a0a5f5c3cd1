#!/usr/bin/env bash
# `make check-install`: installs binary, man page, default configuration,
# init script and systemd unit the way a package build does (PREFIX=/usr
# into a temporary DESTDIR), then checks that every path the init script and
# the unit name exists inside DESTDIR, that nothing still points at
# /usr/local, that an existing configuration survives a reinstall, and that
# `systemd-analyze verify` accepts the unit (skipped, with a message, where
# systemd-analyze is missing). Exit status 1 on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

make=${MAKE:-make}
dest=$(mktemp -d "${TMPDIR:-/tmp}/nutcracker-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT

fail() {
    echo "check-install: FAIL: $*" >&2
    exit 1
}
ok() { echo "check-install: ok: $*"; }

"$make" --no-print-directory install-init install-systemd PREFIX=/usr DESTDIR="$dest" >/dev/null

bin=$dest/usr/bin/nutcracker
init=$dest/etc/init.d/nutcracker
unit=$dest/etc/systemd/system/nutcracker.service
conf=$dest/etc/nutcracker/nutcracker.yml
for f in "$bin" "$dest/usr/share/man/man8/nutcracker.8" "$conf" "$init" "$unit"; do
    [ -f "$f" ] || fail "${f#"$dest"} not installed"
done
[ -x "$bin" ] && [ -x "$init" ] || fail "binary or init script not executable"
"$bin" -V 2>&1 | grep -q '^This is nutcracker-' || fail "installed binary does not run"
cmp -s conf/nutcracker.yml "$conf" || fail "${conf#"$dest"} differs from conf/nutcracker.yml"
"$bin" -t -c "$conf" >/dev/null 2>&1 || fail "the default configuration does not pass -t"
ok "installed /usr/bin/nutcracker, man page, /etc/nutcracker/nutcracker.yml, init script, unit"

# (Comments may mention the default install; commands and settings may not.)
if grep -n '^[^#]*/usr/local' "$init" "$unit"; then
    fail "the installed init script or unit still names /usr/local"
fi

# The init script's defaults, evaluated by sh itself rather than read off
# the text: DAEMON, CONFFILE and the defaults file it sources.
defaults=$(sed -n '/^NAME=/,/^DEFAULTS=/p' "$init")
eval_default() {
    env -i sh -c "$defaults
echo \"\$$1\""
}
daemon=$(eval_default DAEMON)
conffile=$(eval_default CONFFILE)
dflt=$(eval_default DEFAULTS)
[ "$daemon" = /usr/bin/nutcracker ] || fail "init script DAEMON=$daemon"
[ "$conffile" = /etc/nutcracker/nutcracker.yml ] || fail "init script CONFFILE=$conffile"
[ "$dflt" = /etc/default/nutcracker ] || fail "init script defaults file $dflt"
[ -x "$dest$daemon" ] && [ -f "$dest$conffile" ] || fail "init script paths missing in DESTDIR"
sh -n "$init" || fail "init script: syntax"
ok "init script: DAEMON=$daemon CONFFILE=$conffile defaults=$dflt"

# Every Exec*= command of the unit is the installed binary (or kill, for
# reload), and its
# configuration the installed one.
execs=$(sed -n 's/^Exec[A-Za-z]*=-\{0,1\}\([^ ]*\).*/\1/p' "$unit" | grep -v '^/bin/kill$' | sort -u)
[ "$execs" = /usr/bin/nutcracker ] || fail "unit Exec*= commands: $execs"
grep -qx 'Environment=CONFFILE=/etc/nutcracker/nutcracker.yml' "$unit" || fail "unit CONFFILE"
grep -qx 'EnvironmentFile=-/etc/default/nutcracker' "$unit" || fail "unit EnvironmentFile"
ok "unit: Exec*=$execs, CONFFILE=/etc/nutcracker/nutcracker.yml"

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants the Exec*= binaries on this machine (and, with --root,
    # a whole systemd tree), so it checks a copy of the installed unit whose
    # /usr/bin/nutcracker points into DESTDIR, the path checked above;
    # MANPATH lets it find the man page that Documentation= names.
    mkdir "$dest/verify"
    sed "s|^\(Exec[A-Za-z]*=-\{0,1\}\)/usr/bin/nutcracker|\1$dest/usr/bin/nutcracker|" "$unit" \
        >"$dest/verify/nutcracker.service"
    if ! out=$(MANPATH="$dest/usr/share/man" systemd-analyze verify \
        "$dest/verify/nutcracker.service" 2>&1); then
        echo "$out" >&2
        fail "systemd-analyze verify rejects the unit"
    fi
    [ -z "$out" ] || echo "$out"
    rm -r "$dest/verify"
    ok "systemd-analyze verify accepts the unit ($(systemd-analyze --version | head -n 1))"
else
    echo "check-install: skipped systemd-analyze verify: systemd-analyze is not installed"
fi

# A reinstall keeps an existing configuration.
echo "# edited" >>"$conf"
"$make" --no-print-directory install PREFIX=/usr DESTDIR="$dest" >/dev/null
tail -n 1 "$conf" | grep -qx '# edited' || fail "reinstall overwrote ${conf#"$dest"}"
ok "reinstall kept the edited /etc/nutcracker/nutcracker.yml"

"$make" --no-print-directory uninstall PREFIX=/usr DESTDIR="$dest" >/dev/null
left=$(cd "$dest" && find . -type f | sort)
[ "$left" = ./etc/nutcracker/nutcracker.yml ] || fail "uninstall left: $left"
ok "uninstall removed all but the configuration"
echo "check-install: all checks passed"
