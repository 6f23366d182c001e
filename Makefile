# pgops.resilience — `make demo` and `make test` do all their own set-up on a fresh machine.
SHELL := /bin/bash
# A failing command anywhere in a pipe fails the recipe (the sanity copy pipes git into cp).
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUILD := $(CURDIR)/.build
COLLECTIONS := $(BUILD)/collections
# Outside the checkout: inside it, ansible-test would ask git, which ignores .build/, and test nothing.
SANITY_ROOT := $(or $(TMPDIR),/tmp)/pgops-ansible-test/ansible_collections/pgops/resilience
SANDBOX_DIR ?= $(CURDIR)/.sandbox
PYTEST_ARGS ?=
# barman-cloud for archive_command / restore_command, run by the PostgreSQL server's system user: a virtual
# environment made with the system Python, which that user can reach (the development one may live under /root).
SERVER_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
SERVER_TOOLS := $(BUILD)/server-tools
# wal-g (hacking/install-walg.sh): the one on PATH or WALG_BIN, else built from WALG_SOURCE (wal-g 3.0.9's source
# beside the checkout, ../shared/vendor/), else `go install`; cached under .build/walg, where the server user reaches it.
WALG := $(BUILD)/walg/wal-g

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(CURDIR)/sandbox
export PATH := $(BIN):$(PATH)
export PGOPS_SERVER_TOOLS_BIN := $(SERVER_TOOLS)/bin
export PGOPS_WALG_BIN := $(WALG)

.PHONY: help setup venv postgres server-tools walg test-tools collection demo test sanity lint molecule pytest unit integration sandbox-up sandbox-down sandbox-status benchmark benchmark-archive benchmark-barman benchmark-dump benchmark-walg clean

help:
	@echo "make demo      set up, start the sandbox, and repair a real failover (the main job)"
	@echo "make test      set up, then ansible-test sanity, ansible-lint, unit and integration tests, molecule"
	@echo "make sandbox-up / sandbox-status / sandbox-down    the embedded PostgreSQL + S3 sandbox ($(SANDBOX_DIR))"
	@echo "make benchmark the check's latency at 10 thousand and 10 million rows, and archive_restore against psql \\copy (not part of make test)"
	@echo "make benchmark-archive  archive_restore against psql \\copy of the same rows, 1 and 5 million rows"
	@echo "make benchmark-barman   barman_catalog_info and the retention plan on 100,000 WAL objects, against barman's own dry run"
	@echo "make benchmark-dump     pg_dump_bundle / pg_dump_restore against bare pg_dump -Fd -j 2 / pg_restore -j 2 of the same database"
	@echo "make benchmark-walg     walg_backup against bare wal-g backup-push of the same 1 GB database (S3 and a directory), and the restore drill's phase times"

setup: venv postgres server-tools walg collection

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-server-tools.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

postgres:
	@hacking/ensure-system-packages.sh

server-tools: $(SERVER_TOOLS)/.installed

$(SERVER_TOOLS)/.installed: requirements-server-tools.txt | postgres
	$(SERVER_PYTHON) -m venv $(SERVER_TOOLS)
	$(SERVER_TOOLS)/bin/python -m pip install -q --upgrade pip
	$(SERVER_TOOLS)/bin/python -m pip install -q -r requirements-server-tools.txt
	touch $@

walg: | postgres
	@hacking/install-walg.sh $(WALG)

test-tools:
	@hacking/ensure-system-packages.sh --with-test-tools

# The playbooks are run by FQCN (ansible-playbook pgops.resilience.<name>) from this checkout.
# kubernetes.core (galaxy.yml's dependency) is installed beside it, from Galaxy or from PyPI's ansible package.
collection: venv
	@mkdir -p $(COLLECTIONS)/ansible_collections/pgops
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/pgops/resilience
	@hacking/install-collections.sh $(COLLECTIONS) $(PY)

demo: setup
	$(PY) -m pgops_sandbox --workdir $(SANDBOX_DIR) demo

sandbox-up: setup
	$(PY) -m pgops_sandbox --workdir $(SANDBOX_DIR) up

sandbox-status: venv
	$(PY) -m pgops_sandbox --workdir $(SANDBOX_DIR) status

sandbox-down: venv
	$(PY) -m pgops_sandbox --workdir $(SANDBOX_DIR) down

test: setup sanity lint pytest molecule

# ansible-test wants the collection under ansible_collections/<namespace>/<name>; it gets a copy of the
# files git would ship (tracked and untracked-but-not-ignored), and an offline pip bootstrap script
# (hacking/ansible-test-get-pip.py, see its docstring) in its cache.
sanity: setup test-tools
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git -c safe.directory=$(CURDIR) ls-files -co --exclude-standard -z | grep -zv '^hacking/ansible-test-get-pip.py$$' \
	  | xargs -0 -I{} cp --parents {} $(SANITY_ROOT)/
	mkdir -p ~/.ansible/test/cache
	cp hacking/ansible-test-get-pip.py ~/.ansible/test/cache/get_pip_24_2.py
	cd $(SANITY_ROOT) && $(BIN)/ansible-test sanity --python $$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

lint: setup
	$(BIN)/ansible-lint --profile production playbooks/ roles/

# Every role with a molecule scenario converges into a directory on localhost (no cluster) and is verified.
molecule: setup
	for scenario in roles/*/molecule/default; do \
	  role=$${scenario%/molecule/default}; \
	  (cd $$role && $(BIN)/molecule test) || exit 1; \
	done

# One pytest run, so its closing line counts every test. PGOPS_REQUIRE_TOOLS=1 turns a missing
# PostgreSQL into a failure instead of a skip (CI sets it).
pytest: setup
	$(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)

unit: venv collection
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

benchmark: setup
	$(PY) benchmarks/unlogged_check.py
	$(PY) benchmarks/archive_restore.py

benchmark-archive: setup
	$(PY) benchmarks/archive_restore.py

benchmark-barman: setup
	PYTHONPATH=$(CURDIR)/sandbox:$(COLLECTIONS) $(PY) benchmarks/barman_catalog.py

benchmark-dump: setup
	PYTHONPATH=$(CURDIR)/sandbox:$(COLLECTIONS) $(PY) benchmarks/dump_bundle.py

benchmark-walg: setup
	PYTHONPATH=$(CURDIR)/sandbox:$(COLLECTIONS) $(PY) benchmarks/walg.py

clean:
	-$(PY) -m pgops_sandbox --workdir $(SANDBOX_DIR) down
	rm -rf $(BUILD) .pytest_cache
