# fuzz/fuzz.mk -- libFuzzer targets for the parsers in C (see fuzz/README).
# Included from the top Makefile, or: make -f Makefile -f fuzz/fuzz.mk fuzz
#
#   make fuzz             build, then run each target FUZZ_SECONDS (60) s
#                         over its corpus; fails if any target crashes.
#                         New inputs go to a temporary directory; with
#                         FUZZ_MERGE=1 they are merged (minimised) into
#                         fuzz/corpus/TARGET. Crashes: build-fuzz/crashes/.
#   make fuzz-regress     run every target once over fuzz/corpus/TARGET and
#                         fuzz/regress/TARGET (the crash reproducers), no
#                         fuzzing: a few seconds.
#   make fuzz-build       only build (build-fuzz/fuzz_TARGET)
#   make fuzz-clean
#
# FUZZ_TARGETS picks targets (default all); make -j2 fuzz runs two at once.
# FUZZ_FLAGS adds libFuzzer flags (e.g. FUZZ_FLAGS=-jobs=2 or -dict=...).

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_MERGE ?= 0
FUZZ_FLAGS ?=
FUZZ_BUILD = build-fuzz
# Where the code under test comes from (another tree, e.g. a snapshot of
# HEAD while src/ is being edited: make fuzz-clean when switching).
FUZZ_SRCDIR ?= src
FUZZ_TARGETS ?= address acl cli persource proxy resp reader wsframe
FUZZ_LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
FUZZ_LUA_LIBS := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
FUZZ_SSL_LIBS := $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=all \
           -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra $(FUZZ_SAN) \
              -I$(FUZZ_SRCDIR) -Ifuzz $(FUZZ_LUA_CFLAGS)
# libFuzzer's own options for every run: a hang or a runaway allocation
# is a finding too.
FUZZ_RUNOPTS = -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
# Per target: the reader's inputs are a program plus data; longer ones
# only repeat what short ones do, slower.
FUZZ_RUNOPTS_reader = -max_len=8192
FUZZ_RUNOPTS_resp = -max_len=4096
# FUZZ_KNOWN=peer-path: let fuzz_reader go on past that known bug.
FUZZ_KNOWN ?=
FUZZ_ENV = LUASRV_FUZZ_KNOWN=$(FUZZ_KNOWN) ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# What each target links besides its own file (the reader needs all of
# luasrv but main.c: lconn.c reaches the worker, the models and the state).
FUZZ_SRC_address =
FUZZ_SRC_acl = acl
FUZZ_SRC_cli = cli acl log address
FUZZ_SRC_persource = persource
FUZZ_SRC_proxy = proxy
FUZZ_LIBS_proxy =
FUZZ_SRC_wsframe = wsframe
FUZZ_LIBS_wsframe =
FUZZ_SRC_resp = resp
FUZZ_LIBS_resp =
FUZZ_SRC_reader = $(filter-out main,$(patsubst $(FUZZ_SRCDIR)/%.c,%,$(wildcard $(FUZZ_SRCDIR)/*.c)))
FUZZ_LIBS_reader = $(FUZZ_LUA_LIBS) $(FUZZ_SSL_LIBS) -lm -lpthread
FUZZ_LIBS_persource = -lpthread
FUZZ_LIBS_cli =
FUZZ_LIBS_acl =
# address.c resolves names; for fuzzing, getaddrinfo goes through a shim
# in fuzz_address.c that forbids DNS (AI_NUMERICHOST).
FUZZ_OBJ_address = $(FUZZ_BUILD)/obj/address-numeric.o
FUZZ_LIBS_address =

FUZZ_BINS = $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build fuzz-regress fuzz-clean
.PRECIOUS: $(FUZZ_BUILD)/obj/%.o $(FUZZ_BUILD)/fuzz_%

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj:
	mkdir -p $@

# The code under test: instrumented for coverage, not linked with main().
$(FUZZ_BUILD)/obj/%.o: $(FUZZ_SRCDIR)/%.c $(wildcard $(FUZZ_SRCDIR)/*.h) | $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/obj/address-numeric.o: $(FUZZ_SRCDIR)/address.c $(FUZZ_SRCDIR)/address.h | $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	  -Dgetaddrinfo=fuzz_getaddrinfo -c -o $@ $<

.SECONDEXPANSION:
$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h \
    $$(addprefix $(FUZZ_BUILD)/obj/,$$(addsuffix .o,$$(FUZZ_SRC_$$*))) \
    $$(FUZZ_OBJ_$$*)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	  $(addprefix $(FUZZ_BUILD)/obj/,$(addsuffix .o,$(FUZZ_SRC_$*))) \
	  $(FUZZ_OBJ_$*) \
	  $(FUZZ_LIBS_$*)

# One rule per target, so make -j runs them side by side. Each writes
# its log to build-fuzz/fuzz_TARGET.log and prints the last lines of it
# (the stack) when it fails.
fuzz: $(FUZZ_TARGETS:%=fuzz-run-%)
	@echo "fuzz: all targets ran $(FUZZ_SECONDS) s without a crash"

fuzz-run-%: $(FUZZ_BUILD)/fuzz_%
	@mkdir -p fuzz/corpus/$* $(FUZZ_BUILD)/crashes/$*
	@work=$$(mktemp -d /tmp/luasrv-fuzz-$*.XXXXXX); \
	echo "fuzz_$*: $(FUZZ_SECONDS) s (log: $(FUZZ_BUILD)/fuzz_$*.log)"; \
	$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$* $(FUZZ_RUNOPTS) $(FUZZ_RUNOPTS_$*) \
	  $(FUZZ_FLAGS) \
	  -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=$(FUZZ_BUILD)/crashes/$*/ \
	  $$work fuzz/corpus/$* > $(FUZZ_BUILD)/fuzz_$*.log 2>&1; rc=$$?; \
	grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|^#[0-9]+ *DONE' \
	  $(FUZZ_BUILD)/fuzz_$*.log | sed 's/^/  fuzz_$*: /'; \
	if [ $$rc -ne 0 ]; then \
	  tail -n 60 $(FUZZ_BUILD)/fuzz_$*.log; \
	  echo "fuzz_$*: FAILED (exit $$rc); reproducer in $(FUZZ_BUILD)/crashes/$*/"; \
	  echo "  copy it to fuzz/regress/$*/ once understood"; \
	elif [ "$(FUZZ_MERGE)" = 1 ]; then \
	  $(FUZZ_BUILD)/fuzz_$* -merge=1 fuzz/corpus/$* $$work \
	    >> $(FUZZ_BUILD)/fuzz_$*.log 2>&1 && \
	  echo "  fuzz_$*: merged into fuzz/corpus/$*"; \
	fi; \
	rm -rf $$work; exit $$rc

# Every corpus and regression input once, no fuzzing.
fuzz-regress: $(FUZZ_BINS)
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  files=$$(find fuzz/corpus/$$t fuzz/regress/$$t -type f 2>/dev/null | sort); \
	  [ -n "$$files" ] || continue; \
	  n=$$(echo "$$files" | wc -l); \
	  if $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t -timeout=10 -rss_limit_mb=2048 \
	      $$files > $(FUZZ_BUILD)/regress_$$t.log 2>&1; then \
	    echo "fuzz-regress: fuzz_$$t: $$n inputs ok"; \
	  else \
	    tail -n 40 $(FUZZ_BUILD)/regress_$$t.log; \
	    echo "fuzz-regress: fuzz_$$t: FAILED (log: $(FUZZ_BUILD)/regress_$$t.log)"; \
	    fail=1; \
	  fi; \
	done; exit $$fail

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
