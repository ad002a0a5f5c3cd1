# nutcracker: build, test, install.
#
#   make                 build the release binary (cargo build --release)
#   make test            install test dependencies if missing (as root, via
#                        apt-get), then run every test (cargo test --release)
#   make install         install binary and man page under $(DESTDIR)$(PREFIX)
#   make uninstall       remove them
#   make demo            start a local demo (redis + memcached + nutcracker)
#   make lint            rustfmt check and clippy with warnings as errors

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
INSTALL ?= install

BINDIR := $(PREFIX)/bin
MAN8DIR := $(PREFIX)/share/man/man8
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/nutcracker

.PHONY: all build deps test install uninstall demo lint clean bench soak

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

install: $(BIN)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MAN8DIR)
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/nutcracker
	$(INSTALL) -m 0644 man/nutcracker.8 $(DESTDIR)$(MAN8DIR)/nutcracker.8

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/nutcracker $(DESTDIR)$(MAN8DIR)/nutcracker.8

demo:
	bash scripts/demo.sh

soak:
	bash scripts/soak.sh

bench:
	bash scripts/bench.sh $(BENCH_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
