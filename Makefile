# capi-rollout — every target installs what it needs (a fresh machine needs only `make demo` / `make test`).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export CAPI_ROLLOUT_CACHE ?= $(HOME)/.cache/capi-rollout

.PHONY: setup lock tools node-tools node-check lint render test e2e demo bench image clean

setup: $(VENV)/.installed sim/talos/upstream/.stamp

# Every dependency (runtime, dev and the build backend) from the lock, each file checked against its hash; then
# the package itself, without dependencies or build isolation (hatchling comes from the lock too).
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The simulator's Talos protos, generated from the pinned Talos module zip's api/*.proto (Go module proxy; never
# committed). tools/talos_protos.py keeps its own stamp, so this re-runs when the pins or the generator change.
sim/talos/upstream/.stamp: $(VENV)/.installed tools/versions.env tools/talos_protos.py tools/talosctl/v1.13/go.mod
	$(BIN)/python tools/talos_protos.py

# Refresh the locks after changing pyproject.toml's dependencies (or to take new releases): pip-tools, pinned,
# from PyPI, in its own venv. dev.txt is resolved first; runtime.txt (both images) and build.txt (hatchling)
# are constrained to its versions. Review the diff and commit requirements/.
PIP_TOOLS := pip-tools==7.6.2
LOCK_VENV := .venv-lock
COMPILE   := PIP_FIND_LINKS= $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
             --no-emit-find-links $(LOCK_FLAGS)
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PY) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q '$(PIP_TOOLS)'; }
	$(COMPILE) --all-extras --all-build-deps --output-file requirements/dev.txt pyproject.toml
	$(COMPILE) --extra sim --output-file requirements/runtime.txt pyproject.toml requirements/constraints.in
	$(COMPILE) --output-file requirements/build.txt requirements/build.in requirements/constraints.in

# kube-apiserver + etcd built from pinned Go modules, and the pinned upstream CRDs (cached, keyed by version);
# talosctl, one per pinned Talos line, the judge of the simulated Talos API (tests/sim/conformance).
tools: setup
	bash tools/build.sh
	bash tools/talosctl.sh

# The real node of `make e2e` / `make demo`: kubelet, scheduler, controller manager, kube-proxy, kubectl,
# containerd, Argo's workflow-controller and argoexec, pause (pinned Go modules, cached) and its Debian packages;
# Argo Events (argo-events, nats-server) for the trigger tests.
node-tools: setup node-check
	bash tools/node.sh
	bash tools/events.sh

# One line naming what this machine lacks for a real node (not Linux, not root, no network namespaces), exit 1.
node-check: setup
	@$(BIN)/python -m e2e.node check --before-build

# The e2e backend: E2E_CLUSTER=node (default: a real node, both CAPI lines, one node each), kind, existing, local.
E2E_CLUSTER ?= node
# --capture=tee-sys: every workflow's step lines reach the console while it runs (a pass takes half an hour), and
# a failure's report still holds what its test printed; -v puts each test's name before its lines, its result after.
E2E_PYTEST  := $(BIN)/pytest e2e -v --tb=short -p no:cacheprovider --capture=tee-sys

# actionlint checks .github/workflows when `make tools` has built it (pinned in tools/versions.env, cached by version).
ACTIONLINT := $(CAPI_ROLLOUT_CACHE)/bin/actionlint-$(shell sed -n 's/^ACTIONLINT_VERSION=//p' tools/versions.env)/actionlint

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@if [ -x "$(ACTIONLINT)" ]; then echo "$(ACTIONLINT)"; "$(ACTIONLINT)"; \
	else echo "lint: actionlint is not built (make tools builds it): .github/workflows not checked"; fi

# Regenerate the committed YAML under overlay/ on purpose (never in CI).
render: setup
	$(BIN)/capi-rollout render

test: setup tools lint
	$(BIN)/capi-rollout render --check
	$(BIN)/pytest tests --tb=short

ifeq ($(E2E_CLUSTER),node)
# The node check comes first (one line, exit 1 where a node cannot run), before the long builds; with -j too.
ifneq ($(filter e2e demo,$(MAKECMDGOALS)),)
tools node-tools: | node-check
endif
e2e: node-check setup tools node-tools
	mkdir -p results
	E2E_NODE_CAPI_LINE=v1.14 $(BIN)/python -m e2e.node run -- $(E2E_PYTEST) -k "not v1.10" \
	  --junitxml=results/e2e-junit.xml
	E2E_NODE_CAPI_LINE=v1.10 $(BIN)/python -m e2e.node run -- $(E2E_PYTEST) -k "v1.10" \
	  --junitxml=results/e2e-junit-v110.xml

demo: node-check setup tools node-tools
	$(BIN)/python -m e2e.node run -- $(BIN)/python -m e2e.demo
else
e2e: setup tools
	mkdir -p results
	E2E_CLUSTER=$(E2E_CLUSTER) $(E2E_PYTEST) --junitxml=results/e2e-junit.xml

demo: setup tools
	E2E_CLUSTER=$(E2E_CLUSTER) $(BIN)/python -m e2e.demo
endif

# The engine's evaluation over a 5,000-Machine snapshot, then one simulator with 1,000 Machines at 60x and the
# runner rolling them on the local API server (tests.bench.scale, about 5 minutes).
bench: setup tools
	$(BIN)/python -m tests.bench.engine
	$(BIN)/python -m tests.bench.scale

# The step image (needs a Docker engine); its name and tag come from the package version.
image: setup
	docker build -t "$$($(BIN)/python -m capi_rollout.workflow.image)" .

clean:
	rm -rf $(VENV) $(LOCK_VENV) results .pytest_cache .mypy_cache .ruff_cache
