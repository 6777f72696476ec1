# luasrv -- a socket server in C that runs request handlers written in Lua 5.4.
#
#   make            build build/luasrv
#   make run        install what building and running need, build, serve
#                   scripts/echo.lua on 127.0.0.1:$(PORT)
#   make test       install the test tools too, build, check the layers,
#                   run the C unit tests and every spec
#   make check-layers  fail on a dependency between objects that points up
#   make test-asan  the same under AddressSanitizer + UBSan (build-asan/)
#   make bench      the benchmark (see bench/README.md)
#   make deb        the Debian package, build/deb/luasrv_VERSION_ARCH.deb
#   make clean

CC ?= gcc
WERROR ?= -Werror
OPT ?= -O2 -g
# Warnings, as Lua's makefile lists them: the common set, then shadowing,
# macros used undefined, string literals written to, old-style prototypes,
# missing prototypes for non-static functions and format strings.
WARN = -Wall -Wextra -Wshadow -Wundef -Wwrite-strings -Wstrict-prototypes \
       -Wmissing-prototypes -Wformat=2
LUA_CFLAGS = $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS = $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
SSL_CFLAGS = $(shell pkg-config --cflags openssl 2>/dev/null)
SSL_LIBS = $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -DLUASRV_LUADIR='"$(LUADIR)"' \
             $(OPT) $(WARN) $(WERROR) $(LUA_CFLAGS) $(SSL_CFLAGS) \
             -MMD -MP $(SANITIZE_FLAGS) $(CFLAGS)
LDLIBS_ALL = $(LUA_LIBS) $(SSL_LIBS) -lm -lpthread $(LDLIBS)

PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
LUADIR = $(PREFIX)/share/lua/5.4
DATADIR = $(PREFIX)/share/luasrv
MANDIR = $(PREFIX)/share/man/man1
DOCDIR = $(PREFIX)/share/doc/luasrv
# The systemd template unit, its socket unit and the example NAME.conf;
# /etc for PREFIX=/usr (the package), else PREFIX/etc.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)

BUILD ?= build
SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:src/%.c=$(BUILD)/%.o)
# The pure modules the C unit tests link against (no Lua).
PURE = address acl buf evloop fileopen log cli persource proxy resp shdict sslmem wsframe
PURE_OBJS = $(PURE:%=$(BUILD)/%.o)
CTESTS = $(patsubst spec/c/%.c,$(BUILD)/%,$(wildcard spec/c/test_*.c))

# Debian packages: to build; to run the shipped handlers (their JSON);
# to run the specs. Only make test installs the last: some are services
# (redis-server, haproxy, memcached) that Debian starts, and they take
# their ports.
DEPS_BUILD = gcc make pkg-config liblua5.4-dev libssl-dev
DEPS_RUN = lua-cjson
DEPS_TEST = lua5.4 lua-busted lua-socket redis-tools redis-server socat bsdutils systemd curl wrk haproxy \
            lua-rex-pcre2 memcached dnsmasq-base nodejs lua-filesystem media-types \
            openssl python3
PORT ?= 9999
# The models every spec runs under.
MODELS ?= sync,fork,thread,event
# What the benchmark adds: its peers and a load tool.
DEPS_BENCH = python3 lua-luv redis-server redis-tools haproxy wrk nginx libnginx-mod-http-lua

.PHONY: all deps deps-run run test test-asan check-specs check-layers unit bench clean install uninstall

all: $(BUILD)/luasrv

deps-run:
	@tools/install-deps $(DEPS_BUILD) $(DEPS_RUN)

deps:
	@tools/install-deps $(DEPS_BUILD) $(DEPS_RUN) $(DEPS_TEST)

$(BUILD)/luasrv: $(OBJS)
	$(CC) $(SANITIZE_FLAGS) -o $@ $(OBJS) $(LDLIBS_ALL)

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/test_%: spec/c/test_%.c $(PURE_OBJS)
	$(CC) $(CFLAGS_ALL) -Isrc -o $@ $< $(PURE_OBJS) $(LDLIBS_ALL)

# The TLS transport's test runs it over a socketpair: conn.c and tls.c too.
TLS_TEST_OBJS = $(PURE_OBJS) $(BUILD)/conn.o $(BUILD)/tls.o
$(BUILD)/test_tls: spec/c/test_tls.c $(TLS_TEST_OBJS)
	$(CC) $(CFLAGS_ALL) -Isrc -o $@ $< $(TLS_TEST_OBJS) $(LDLIBS_ALL)

# The fuzz targets (fuzz/) replayed over their corpora and crash
# reproducers with the ordinary compiler: make test runs them as C tests.
FUZZ_REPLAY = address acl cli persource proxy resp reader wsframe
CTESTS += $(FUZZ_REPLAY:%=$(BUILD)/test_fuzz_%)
REPLAY_OBJS_address = $(BUILD)/address-numeric.o
REPLAY_OBJS_acl = $(BUILD)/acl.o
REPLAY_OBJS_cli = $(BUILD)/cli.o $(BUILD)/acl.o $(BUILD)/log.o $(BUILD)/address.o
REPLAY_OBJS_persource = $(BUILD)/persource.o
REPLAY_OBJS_proxy = $(BUILD)/proxy.o
REPLAY_OBJS_wsframe = $(BUILD)/wsframe.o
REPLAY_OBJS_resp = $(BUILD)/resp.o
REPLAY_OBJS_reader = $(filter-out $(BUILD)/main.o,$(OBJS))

$(BUILD)/address-numeric.o: src/address.c | $(BUILD)
	$(CC) $(CFLAGS_ALL) -Dgetaddrinfo=fuzz_getaddrinfo -c -o $@ $<

.SECONDEXPANSION:
$(BUILD)/test_fuzz_%: fuzz/fuzz_%.c fuzz/replay.c $$(REPLAY_OBJS_$$*)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -Isrc -Ifuzz \
	  -DREPLAY_TARGET='"$*"' -o $@ $< fuzz/replay.c $(REPLAY_OBJS_$*) \
	  $(LDLIBS_ALL)

$(BUILD):
	mkdir -p $(BUILD)

# The module path compiled into lstate.o follows PREFIX: rebuild on change.
.PHONY: FORCE
$(BUILD)/luadir: FORCE | $(BUILD)
	@echo '$(LUADIR)' | cmp -s - $@ 2>/dev/null || echo '$(LUADIR)' > $@
$(BUILD)/lstate.o: $(BUILD)/luadir

run: deps-run
	@$(MAKE) --no-print-directory all
	$(BUILD)/luasrv scripts/echo.lua --tcp 127.0.0.1:$(PORT)

unit: $(CTESTS)

# Every object depends only on the floors below it (doc/design.md).
check-layers: $(OBJS)
	@tools/check-layers $(BUILD)

test: deps
	@$(MAKE) --no-print-directory all unit check-layers
	@LUASRV_MODELS=$(MODELS) LUASRV_BIN=$(BUILD)/luasrv BUILD=$(BUILD) spec/run

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" \
	  SANITIZE_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  all unit
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
	  UBSAN_OPTIONS=print_stacktrace=1 \
	  LUASRV_MODELS=$(MODELS) LUASRV_TIME_SCALE=3 \
	  LUASRV_BIN=build-asan/luasrv BUILD=build-asan spec/run

# The thread model under ThreadSanitizer (build-tsan/). Reports go to
# files: a server started by a spec writes its stderr where no test looks,
# so any report file fails the target, whatever the specs said.
.PHONY: test-tsan
test-tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT="-O1 -g" \
	  SANITIZE_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" all unit
	@rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	@TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 log_path=$(CURDIR)/build-tsan/reports/tsan" \
	  LUASRV_MODELS=thread LUASRV_TIME_SCALE=3 \
	  LUASRV_BIN=build-tsan/luasrv BUILD=build-tsan spec/run; rc=$$?; \
	  if ls build-tsan/reports/tsan.* >/dev/null 2>&1; then \
	    cat build-tsan/reports/tsan.*; \
	    echo "test-tsan: ThreadSanitizer reported the problems above"; exit 1; \
	  fi; exit $$rc

# A subset of the specs with every luasrv process under valgrind memcheck:
# any error or definitely lost block in any process's log fails it.
VALGRIND_SPECS = spec/request_spec.lua spec/read_spec.lua spec/hooks_spec.lua \
                 spec/datagram_spec.lua spec/listeners_spec.lua
.PHONY: test-valgrind
test-valgrind: deps
	@tools/install-deps valgrind
	@$(MAKE) --no-print-directory all
	@rm -rf $(BUILD)/valgrind && mkdir -p $(BUILD)/valgrind
	@VALGRIND_LOGS=$(CURDIR)/$(BUILD)/valgrind LUASRV_REAL_BIN=$(BUILD)/luasrv \
	  LUASRV_BIN=tools/valgrind-luasrv LUASRV_MODELS=sync,event \
	  LUASRV_TIME_SCALE=10 busted --output=TAP $(VALGRIND_SPECS) \
	  > $(BUILD)/valgrind/specs.tap 2>&1; rc=$$?; \
	  tail -1 $(BUILD)/valgrind/specs.tap; \
	  bad=$$(grep -lE "ERROR SUMMARY: [1-9]|definitely lost: [1-9]" \
	         $(BUILD)/valgrind/vg.*.log); \
	  n=$$(ls $(BUILD)/valgrind/vg.*.log | wc -l); \
	  echo "valgrind: $$n processes checked"; \
	  if [ -n "$$bad" ]; then cat $$bad; echo "valgrind found errors in: $$bad"; exit 1; fi; \
	  grep -q "^not ok" $(BUILD)/valgrind/specs.tap && { grep -A6 "^not ok" $(BUILD)/valgrind/specs.tap; exit 1; }; \
	  exit $$rc

# The peers are optional: if they cannot be installed, their rows are n/a.
bench: deps
	@tools/install-deps $(DEPS_BENCH) || \
	  echo "make bench: could not install $(DEPS_BENCH); their rows will be n/a" >&2
	@$(MAKE) --no-print-directory all
	bench/run $(if $(filter-out 0 no false,$(QUICK)),--quick)

# DESTDIR for packaging; Lua modules go where lua5.4 looks already. The
# docs keep their layout (README.md links to doc/ and bench/), and the
# paths in the man page, the units and example.conf follow PREFIX (the
# files in contrib/systemd name the package's: /usr, /etc).
PATHS_SED = sed -e 's|/usr/local/|$(PREFIX)/|g'
UNITS_SED = sed -e 's|/usr/bin/|$(BINDIR)/|g' -e 's|/usr/share/|$(PREFIX)/share/|g' \
                -e 's|/etc/luasrv/|$(SYSCONFDIR)/luasrv/|g'
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/luasrv/http \
	  $(DESTDIR)$(DATADIR)/scripts $(DESTDIR)$(MANDIR) \
	  $(DESTDIR)$(DOCDIR)/doc $(DESTDIR)$(DOCDIR)/bench \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/luasrv
	install -m 755 $(BUILD)/luasrv $(DESTDIR)$(BINDIR)/luasrv
	install -m 644 lua/luasrv/*.lua $(DESTDIR)$(LUADIR)/luasrv/
	install -m 644 lua/luasrv/http/*.lua $(DESTDIR)$(LUADIR)/luasrv/http/
	install -m 644 scripts/*.lua $(DESTDIR)$(DATADIR)/scripts/
	$(PATHS_SED) doc/luasrv.1 > $(DESTDIR)$(MANDIR)/luasrv.1
	chmod 644 $(DESTDIR)$(MANDIR)/luasrv.1
	for f in luasrv@.service luasrv@.socket; do \
	  $(UNITS_SED) contrib/systemd/$$f > $(DESTDIR)$(UNITDIR)/$$f && \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$f || exit 1; done
	$(UNITS_SED) contrib/systemd/example.conf > $(DESTDIR)$(SYSCONFDIR)/luasrv/example.conf
	chmod 644 $(DESTDIR)$(SYSCONFDIR)/luasrv/example.conf
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 644 doc/*.md $(DESTDIR)$(DOCDIR)/doc/
	install -m 644 bench/README.md $(DESTDIR)$(DOCDIR)/bench/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/luasrv $(DESTDIR)$(MANDIR)/luasrv.1
	rm -rf $(DESTDIR)$(LUADIR)/luasrv $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(UNITDIR)/luasrv@.service $(DESTDIR)$(UNITDIR)/luasrv@.socket
	rm -f $(DESTDIR)$(SYSCONFDIR)/luasrv/example.conf
	-rmdir $(DESTDIR)$(SYSCONFDIR)/luasrv 2>/dev/null

# make deb: the Debian package, built by debhelper from debian/ in a copy
# of the tree (dpkg-buildpackage writes beside the source): the result is
# $(DEBDIR)/luasrv_VERSION_ARCH.deb, checked by lintian.
DEPS_DEB = build-essential dpkg-dev debhelper lintian pkg-config liblua5.4-dev libssl-dev logrotate
DEBDIR ?= $(BUILD)/deb
DEB_TREE = LICENSE Makefile README.md bench/README.md contrib debian doc \
           fuzz/fuzz.mk lua scripts spec/c src
.PHONY: deb
deb:
	@tools/install-deps $(DEPS_DEB)
	rm -rf $(DEBDIR) && mkdir -p $(DEBDIR)/luasrv
	tar -cf - $(DEB_TREE) | tar -xf - -C $(DEBDIR)/luasrv
	cd $(DEBDIR)/luasrv && dpkg-buildpackage -us -uc -b
	lintian --fail-on error $(DEBDIR)/luasrv_*.deb

clean:
	rm -rf build build-asan build-tsan bench/build

-include $(OBJS:.o=.d)

# libFuzzer targets (clang): make fuzz, make fuzz-regress; see fuzz/README.md
include fuzz/fuzz.mk
