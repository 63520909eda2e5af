# Two commands on a fresh Debian 12 machine:  make demo   and   make test
# Each installs what it needs (apt packages as root, a venv with the package).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := libdpdk-dev dpdk dpdk-dev pkg-config gcc python3-venv python3-dev \
                iproute2 iputils-ping libpcap-dev tcpdump nfdump pmacct procps \
                traceroute ethtool dpdk-doc make
DURATION ?= 10
PYTEST_ARGS ?=

.PHONY: demo test bench deps apt clean sanitize sanitize-deps fuzz-build fuzz-seed fuzz-smoke fuzz fuzz-replay fuzz-py fuzz-py-deps fuzz-coverage

demo: deps
	$(BIN)/dataplane run --duration $(DURATION)

test: deps
	$(BIN)/pytest $(PYTEST_ARGS)

bench: deps
	$(BIN)/python bench/io_forward.py

deps: apt $(VENV)/.installed

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Editable install: meson rebuilds the C shim on import when sources change.
$(VENV)/.installed: pyproject.toml meson.build
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q meson-python meson ninja 'cffi>=2.1'
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $@

# ---- sanitizers -------------------------------------------------------------
# The native code built with AddressSanitizer + UBSan (gcc; DPDK itself is not
# instrumented) into its own build dir and venv, then the in-process tiers.
# A sanitizer report kills the (forked) test, which fails as "died"; the
# report is attached to it and every report is printed at the end.
ASAN_VENV := .venv-asan
ASAN_BIN := $(ASAN_VENV)/bin
ASAN_BUILD := build/asan
SANITIZE_TESTS ?= tests/unit tests/vdev
SAN_LOG_DIR := $(CURDIR)/build/asan-logs
# alignment: DPDK's rte_hash_crc() loads keys 8 bytes at a time whatever
# their alignment (fine on x86, UB in C) - not ours to fix, and it fires on
# every flow hash.
SAN_SETUP := -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
	-Csetup-args=-Dbuildtype=debugoptimized \
	"-Csetup-args=-Dc_args=['-fno-omit-frame-pointer','-fno-sanitize=alignment','-fno-sanitize-recover=undefined']"
# detect_leaks=0: EAL keeps its memory to the end by design, Python never frees
# everything. The preload puts the (gcc) ASan runtime first, before Python.
# ASan reports go to files (they survive a dying pytest); gcc's UBSan runtime
# ignores log_path next to ASan and writes to stderr, which tests/conftest.py
# attaches to the forked test that died.
SAN_ENV = LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$(SAN_LOG_DIR)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1

sanitize: sanitize-deps
	rm -rf $(SAN_LOG_DIR) && mkdir -p $(SAN_LOG_DIR)
	@rc=0; $(SAN_ENV) $(ASAN_BIN)/python -m pytest $(SANITIZE_TESTS) $(PYTEST_ARGS) || rc=$$?; \
	if ls $(SAN_LOG_DIR)/* >/dev/null 2>&1; then \
	  echo "==== sanitizer reports ($(SAN_LOG_DIR)) ===="; cat $(SAN_LOG_DIR)/*; rc=1; fi; \
	exit $$rc

sanitize-deps: apt $(ASAN_VENV)/.installed

# Editable too: meson rebuilds build/asan on import when native/ changes.
$(ASAN_VENV)/.installed: pyproject.toml meson.build
	test -x $(ASAN_BIN)/python || $(PY) -m venv $(ASAN_VENV)
	$(ASAN_BIN)/pip install -q --upgrade pip
	$(ASAN_BIN)/pip install -q meson-python meson ninja 'cffi>=2.1'
	$(ASAN_BIN)/pip install -q --no-build-isolation -Cbuild-dir=$(ASAN_BUILD) $(SAN_SETUP) -e '.[test]'
	touch $@

# ---- fuzzing (fuzz/README.md) --------------------------------------------------
FUZZ_TARGETS := netflow_parse netflow_burst ip6flow_burst
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_PY_SECONDS ?= 10
FUZZ_OUT := build/fuzz

fuzz-build: apt
	@command -v clang >/dev/null || { if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clang; }
	fuzz/build.sh $(FUZZ_OUT)

fuzz-seed: deps
	$(BIN)/python fuzz/seed.py

# Every crasher ever kept, replayed (cheap: each file runs once).
fuzz-replay: fuzz-build
	fuzz/run.sh replay $(FUZZ_OUT) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build fuzz-seed fuzz-py-deps
	fuzz/run.sh fuzz $(FUZZ_OUT) $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)
	fuzz/run.sh replay $(FUZZ_OUT) $(FUZZ_TARGETS)
	$(MAKE) --no-print-directory fuzz-py FUZZ_PY_SECONDS=$(FUZZ_PY_SECONDS)

fuzz: fuzz-build fuzz-seed
	fuzz/run.sh fuzz $(FUZZ_OUT) $(FUZZ_SECONDS) $(FUZZ_TARGETS)
	fuzz/run.sh replay $(FUZZ_OUT) $(FUZZ_TARGETS)

# Line coverage of native/ that each corpus reaches (llvm-cov).
fuzz-coverage: fuzz-build
	fuzz/coverage.sh $(FUZZ_TARGETS)

fuzz-py-deps: deps
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q atheris

fuzz-py: fuzz-py-deps
	fuzz/run.sh py $(BIN)/python $(FUZZ_PY_SECONDS)

clean:
	rm -rf $(VENV) $(ASAN_VENV) build
