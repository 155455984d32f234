# mailfleet — two commands: `make run` and `make test`. Each prepares what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench deps venv clean

$(STAMP): requirements-dev.txt layers/mailfleet/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the real peers need: Dovecot 2.3 and a mail user for it.
# Without root this only says what is missing; the tests and the demo then skip Dovecot.
deps:
	@bash scripts/install-deps.sh

run: venv deps
	$(PY) -m mailfleet_local.run

test: venv deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/cfn-lint template.yaml

bench: venv deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .aws-sam
