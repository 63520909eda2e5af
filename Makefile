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

.PHONY: demo test bench deps apt clean

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

clean:
	rm -rf $(VENV) build
