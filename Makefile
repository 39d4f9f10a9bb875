# capi-rollout — every target installs what it needs (a fresh machine needs only `make demo` / `make test`).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export CAPI_ROLLOUT_CACHE ?= $(HOME)/.cache/capi-rollout

.PHONY: setup tools lint render test e2e demo bench image clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# kube-apiserver + etcd built from pinned Go modules, and the pinned upstream CRDs (cached, keyed by version).
tools: setup
	bash tools/build.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Regenerate the committed YAML under overlay/ on purpose (never in CI).
render: setup
	$(BIN)/capi-rollout render

test: setup tools lint
	$(BIN)/capi-rollout render --check
	$(BIN)/pytest tests --tb=short

e2e: setup tools
	mkdir -p results
	$(BIN)/pytest e2e --tb=short --junitxml=results/e2e-junit.xml

demo: setup tools
	$(BIN)/python -m e2e.demo

bench: setup
	$(BIN)/python -m tests.bench

# The step image (needs a Docker engine); its name and tag come from the package version.
image: setup
	docker build -t "$$($(BIN)/python -m capi_rollout.workflow.image)" .

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
