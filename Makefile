# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := pkg-config default-libmysqlclient-dev mariadb-server mariadb-client redis-server zstd openssh-server openssh-client
export AIRFLOW_HOME ?= $(CURDIR)/.sandbox/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: deps venv lint test demo run bench sandbox-up sandbox-down clean

deps:  ## Debian packages the tools and the mysql provider need (installed only when missing)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt | deps
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	touch $@

venv: deps $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check dags plugins tests scripts

test: venv lint
	$(PY) -m pytest tests -q -p no:cacheprovider

sandbox-up: venv
	$(PY) scripts/sandbox.py up

sandbox-down:
	-$(PY) scripts/sandbox.py down

demo: venv
	$(PY) scripts/demo.py

run: venv
	eval "$$($(PY) scripts/sandbox.py env)" && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" airflow standalone

bench: venv
	$(PY) -m pytest tests/bench -q -s -p no:cacheprovider --bench

clean: sandbox-down
	rm -rf .sandbox
