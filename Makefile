# nutcracker: build, test, install.
#
#   make                 build the release binary (cargo build --release)
#   make test            install test dependencies if missing (as root, via
#                        apt-get), then run every test (cargo test --release)
#   make install         install binary and man page under $(DESTDIR)$(PREFIX),
#                        and $(SYSCONFDIR)/nutcracker/nutcracker.yml (from
#                        conf/) unless one exists
#   make install-init    install, plus the SysV init script as
#                        $(SYSCONFDIR)/init.d/nutcracker
#   make install-systemd install, plus the systemd unit as
#                        $(SYSTEMDUNITDIR)/nutcracker.service
#   make check-install   install all three into a temporary DESTDIR with
#                        PREFIX=/usr and check the paths they name
#   make uninstall       remove what install* put there (not the config)
#   make demo            start a local demo (redis + memcached + nutcracker)
#   make fuzz            run every cargo-fuzz target FUZZ_SECONDS (300) each
#   make soak            long soak test (NC_SOAK_SECONDS, default 600)
#   make twemproxy-suite TWEMPROXY_SRC=dir
#                        run twemproxy 0.5.0's own tests/ against this binary
#   make lint            rustfmt check and clippy with warnings as errors

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
INSTALL ?= install
# /etc whatever the prefix: the init script, the unit and their defaults file
# (/etc/default/nutcracker) live where the system looks for them.
SYSCONFDIR ?= /etc
# Where an administrator's units go; packages use /usr/lib/systemd/system.
SYSTEMDUNITDIR ?= $(SYSCONFDIR)/systemd/system

BINDIR := $(PREFIX)/bin
MAN8DIR := $(PREFIX)/share/man/man8
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/nutcracker

.PHONY: all build deps test install install-init install-systemd check-install \
	uninstall demo lint clean bench soak fuzz twemproxy-suite

all: build

build:
	$(CARGO) build --release

# Installing reuses an existing build, so `sudo make install` after `make`
# does not need cargo as root.
$(BIN):
	$(CARGO) build --release

deps:
	bash scripts/install-deps.sh

test: deps
	$(CARGO) test --release

# scripts/nutcracker.init and scripts/nutcracker.service name the paths of a
# default install (/usr/local/bin, /etc); the installed copies get this
# install's BINDIR and SYSCONFDIR instead.
SUBST_PATHS := sed -e 's|/usr/local/bin/|$(BINDIR)/|g' \
	-e 's|/etc/nutcracker/|$(SYSCONFDIR)/nutcracker/|g' \
	-e 's|/etc/default/|$(SYSCONFDIR)/default/|g' \
	-e 's|/etc/systemd/system/|$(SYSTEMDUNITDIR)/|g'

install: $(BIN)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MAN8DIR) $(DESTDIR)$(SYSCONFDIR)/nutcracker
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/nutcracker
	$(INSTALL) -m 0644 man/nutcracker.8 $(DESTDIR)$(MAN8DIR)/nutcracker.8
	@# An existing configuration is the administrator's: never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/nutcracker/nutcracker.yml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/nutcracker/nutcracker.yml"; \
	else \
		echo "$(INSTALL) -m 0644 conf/nutcracker.yml $(DESTDIR)$(SYSCONFDIR)/nutcracker/nutcracker.yml"; \
		$(INSTALL) -m 0644 conf/nutcracker.yml $(DESTDIR)$(SYSCONFDIR)/nutcracker/nutcracker.yml; \
	fi

install-init: install
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/init.d
	$(SUBST_PATHS) scripts/nutcracker.init > $(DESTDIR)$(SYSCONFDIR)/init.d/nutcracker
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/nutcracker

install-systemd: install
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	$(SUBST_PATHS) scripts/nutcracker.service > $(DESTDIR)$(SYSTEMDUNITDIR)/nutcracker.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/nutcracker.service

check-install: $(BIN)
	bash scripts/check-install.sh

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/nutcracker $(DESTDIR)$(MAN8DIR)/nutcracker.8 \
		$(DESTDIR)$(SYSCONFDIR)/init.d/nutcracker $(DESTDIR)$(SYSTEMDUNITDIR)/nutcracker.service

demo:
	bash scripts/demo.sh

soak:
	bash scripts/soak.sh

fuzz:
	bash scripts/fuzz.sh

twemproxy-suite: $(BIN)
	bash scripts/twemproxy-suite.sh $(TWEMPROXY_SRC) $(BIN)

bench:
	bash scripts/bench.sh $(BENCH_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
