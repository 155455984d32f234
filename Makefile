# mailfleet — two commands: `make run` and `make test`. Each prepares what it needs.
SHELL := /bin/bash
# Lambda's python3.12 runtime: the venvs and sam build use a python3.12 too (pyenv's here,
# or one on PATH), so the tests run the interpreter the functions run on.
PY312_DIR := $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin) \
	$(patsubst %/python3.12,%,$(shell command -v python3.12 2>/dev/null)))
PYTHON ?= $(if $(PY312_DIR),$(PY312_DIR)/python3.12,python3.12)
VENV := .venv
PY := $(VENV)/bin/python
# Named after the interpreter: a venv made by an older Makefile (3.11) is made again.
STAMP := $(VENV)/.installed-py312

# The SAM CLI pins its own boto3 (and aws-sam-translator its own pydantic): its own venv.
SAM_CLI_VERSION := 1.170.0
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
# The boto3 the python3.12 runtime ships (what a handler imports on AWS: not the layer's).
RUNTIME_BOTO3 := 1.40.4
BUILD := .aws-sam/build
BUILD_X86 := .aws-sam/build-x86_64
SOURCES := template.yaml $(shell find functions layers -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)
SAM_ENV := PATH="$(PY312_DIR):$$PATH" SAM_CLI_TELEMETRY=0

# The OpenAPI client generator (tests/e2e/test_generated_client.py): its own venv, as its
# typer pin clashes with the CLI's.
CODEGEN_VENV := .venv-codegen
CODEGEN_STAMP := $(CODEGEN_VENV)/.installed

.PHONY: run test lint bench deps venv sam-venv codegen-venv build build-check clean

$(STAMP): requirements-dev.txt layers/mailfleet/requirements.txt pyproject.toml
	@# An existing 3.12 venv is updated in place; any other (3.11 from before) made anew.
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null \
		|| $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

$(SAM_STAMP):
	$(PYTHON) -m venv --clear $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli==$(SAM_CLI_VERSION)
	touch $(SAM_STAMP)

sam-venv: $(SAM_STAMP)

$(CODEGEN_STAMP): requirements-codegen.txt
	$(PYTHON) -m venv $(CODEGEN_VENV)
	$(CODEGEN_VENV)/bin/python -m pip install -q --upgrade pip
	$(CODEGEN_VENV)/bin/python -m pip install -q -r requirements-codegen.txt
	touch $(CODEGEN_STAMP)

codegen-venv: $(CODEGEN_STAMP)

# The real build, as `sam deploy` would upload it (arm64, as the functions declare), then
# bytecode compiled for 3.12: Lambda's /var/task and /opt are read-only, so without it
# every cold start compiles every module again. Rebuilt only when a source changed, and
# then the layer's wheels come from the per-architecture cache unless its requirements
# changed.
$(BUILD)/template.yaml: $(SAM_STAMP) $(SOURCES)
	@test -n "$(PY312_DIR)" || { echo "no Python 3.12 found (pyenv or PATH): sam build needs it" >&2; exit 1; }
	$(SAM_ENV) $(SAM) build --template-file template.yaml --build-dir $(BUILD) --parallel \
		--cached --cache-dir .aws-sam/cache-arm64 >/dev/null
	$(PY312_DIR)/python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash $(BUILD)
	@touch $@

# The same template built for this machine's x86_64, only to import every handler under
# 3.12 here (aarch64 wheels cannot load on x86_64), with the runtime's boto3 beside it.
$(BUILD_X86)/template.yaml: $(SAM_STAMP) $(SOURCES)
	@mkdir -p .aws-sam
	sed 's/\barm64\b/x86_64/g' template.yaml > .aws-sam/template-x86_64.yaml
	$(SAM_ENV) $(SAM) build --template-file .aws-sam/template-x86_64.yaml --base-dir . \
		--build-dir $(BUILD_X86) --parallel --cached --cache-dir .aws-sam/cache-x86_64 >/dev/null
	$(PY312_DIR)/python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash $(BUILD_X86)
	@touch $@

RUNTIME_BOTO3_STAMP := .aws-sam/runtime-boto3/.boto3-$(RUNTIME_BOTO3)
$(RUNTIME_BOTO3_STAMP):
	rm -rf .aws-sam/runtime-boto3
	$(PY312_DIR)/python3.12 -m pip install -q --disable-pip-version-check \
		--target .aws-sam/runtime-boto3 boto3==$(RUNTIME_BOTO3)
	@touch $@

# SAM's own expansion of the template (policy templates into IAM statements): the IAM
# tests evaluate every recorded AWS call against it.
.aws-sam/translated.json: $(SAM_STAMP) template.yaml scripts/sam_translate.py
	@mkdir -p .aws-sam
	$(SAM_VENV)/bin/python scripts/sam_translate.py template.yaml $@

build: $(BUILD)/template.yaml $(BUILD_X86)/template.yaml $(RUNTIME_BOTO3_STAMP) \
	.aws-sam/translated.json

# Deps first: other steps in `make test` need Dovecot; the build tests need the build.
test: venv codegen-venv deps build
	$(PY) -m ruff check .
	MAILFLEET_REQUIRE_BUILD=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Debian packages the real peers need: Dovecot 2.3 and a mail user for it.
# Without root this only says what is missing; the tests and the demo then skip Dovecot.
deps:
	@bash scripts/install-deps.sh

run: venv deps
	$(PY) -m mailfleet_local.run

lint: venv sam-venv
	$(PY) -m ruff check .
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM) validate --lint

bench: venv deps build
	$(PY) -m bench
	$(PY) -m bench.migration

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CODEGEN_VENV) .pytest_cache .ruff_cache .aws-sam
