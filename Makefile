# smgw: `make demo` and `make test` install what they need themselves (Debian 12, as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# System packages the project needs (tests, demo).
APT_PACKAGES := python3 python3-venv python3-dev gcc make sqlite3 tzdata iproute2 procps openssl softhsm2 openvpn nftables iptables systemd postgresql chromium chromium-driver stunnel4 libengine-pkcs11-openssl python3-apt git
DEMO_ARGS ?= --seconds 90
PYTEST_ARGS ?=

.PHONY: all apt deps demo test unit system typecheck lint bench fuzz clean dist ansible-lint

all: test

apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	else echo "make: not root or no apt-get: not installing system packages ($(APT_PACKAGES))"; fi

$(STAMP): pyproject.toml
	$(MAKE) apt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

deps: $(STAMP)

demo: deps
	$(VENV)/bin/smgw demo $(DEMO_ARGS)

typecheck: deps
	$(PY) -m mypy --strict reader appliance pki firewall headend portal

lint: deps
	$(VENV)/bin/ruff check reader appliance pki firewall headend portal tests bench

unit: deps
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

system: deps
	$(PY) -m pytest tests/system -q $(PYTEST_ARGS)

# Three workers on two cores, one file each at a time: the system tests mostly wait on real
# daemons and timeouts (a WAN outage of two send windows alone is 130 s; the whole suite
# keeps the two cores about two-thirds busy), so a third file overlaps where two left idle.
test: deps typecheck
	$(PY) -m pytest tests -q -n 3 --dist loadfile --durations=15 $(PYTEST_ARGS)

# A source release for the Ansible roles (smgw_install_source_archive): the committed tree.
dist:
	mkdir -p dist
	git archive --format=tar.gz --prefix=smgw/ -o dist/smgw-src.tar.gz HEAD pyproject.toml appliance reader pki firewall headend portal templates
	@echo dist/smgw-src.tar.gz

ansible-lint: deps
	cd ansible && ../$(VENV)/bin/ansible-lint --offline --profile production

bench: deps
	@for f in bench/*.py; do echo "# $$f" >&2; $(PY) $$f || exit 1; done

# A long fuzz run (not part of `make test`): FUZZ_RUNS inputs through the parsers.
FUZZ_RUNS ?= 1000000
fuzz: deps
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) tests/fuzz/fuzz_reader.py -atheris_runs=$(FUZZ_RUNS)
	$(PY) tests/fuzz/fuzz_cms.py -atheris_runs=$(FUZZ_RUNS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .hypothesis build *.egg-info
