# likestream: `make run` and `make test` install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)
# The image's dependencies (Dockerfile): every runtime dependency of pyproject.toml and
# every package it pulls in, pinned with the hashes of all their files on PyPI, for
# Python 3.11 on any platform (the image: Linux x86_64 and arm64). `make lock` keeps
# the pins that still fit pyproject.toml; `make lock LOCK_ARGS=--upgrade` takes the newest.
LOCK   := $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes \
          --custom-compile-command 'make lock' --quiet $(LOCK_ARGS)

.PHONY: install lock chromium tools promtool kafka peers broker broker-stop run test unit integration chaos lint fmt clean bench

# The image's versions first (requirements.lock), so that the tests run what it ships.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# The build tools' lock is constrained by the runtime lock: a package in both
# (packaging) gets one version.
lock: install                 ## regenerate requirements.lock and requirements-build.lock (needs PyPI)
	$(LOCK) pyproject.toml -o requirements.lock
	$(LOCK) requirements-build.in --constraint requirements.lock -o requirements-build.lock

chromium:                     ## Debian's Chromium for the browser test (Playwright never downloads one)
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium; }

# The test tools beside the Kafka jars, outside the repository (tests/tools.py finds them
# there): the real kustomize renders k8s/ for tests/unit/test_k8s.py, built by the
# machine's Go from the Go module proxy, one directory per version.
TOOLS     := $(or $(LIKESTREAM_CACHE_DIR),$(HOME)/.cache/likestream)/tools
KUSTOMIZE_VERSION := v5.8.1
KUSTOMIZE := $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION)/kustomize

$(KUSTOMIZE):
	@command -v go >/dev/null || { echo "Go is needed to build kustomize $(KUSTOMIZE_VERSION)"; exit 1; }
	GOTOOLCHAIN=local GOBIN=$(dir $@) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

promtool:                     ## Debian's promtool: the alert rules' checks (tests/unit/runtime/test_observability.py)
	@command -v promtool >/dev/null || { apt-get update -q && apt-get install -y -q prometheus; }

tools: $(KUSTOMIZE) promtool  ## what the tests run besides Python: kustomize, promtool

kafka: install                ## fetch the Kafka jars into ~/.cache/likestream (once)
	$(BIN)/python -c 'from likestream.devtools._broker import Broker; Broker.default().fetch()'

peers: install                ## bench only: build the Kafka Streams peer, a venv with the bench extra (Quix)
	-$(BIN)/python -m likestream.devtools.bench.peers

broker: install               ## start the embedded broker on :9092 (no-op when up)
	$(BIN)/likestream broker start

broker-stop: install
	$(BIN)/likestream broker stop

run: broker                   ## one worker with its web server on :6066
	$(BIN)/likestream worker

test: install lint chromium tools ## every test, against a broker the tests start and stop
	$(BIN)/pytest -ra $(PYTEST_ARGS)

unit: install tools
	$(BIN)/pytest -ra tests/unit $(PYTEST_ARGS)

integration: install chromium
	$(BIN)/pytest -ra tests/integration $(PYTEST_ARGS)

lint: install                 ## ruff format check, ruff lint, mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) data build *.egg-info test-artifacts bench-results

chaos: install                ## the long chaos test: 200k events, 12 SIGKILLs, a broker restart
	$(BIN)/pytest -ra tests/integration/test_chaos.py --chaos=long --timeout=1800 $(PYTEST_ARGS)

bench: kafka peers            ## the standard benchmarks (at most 15 min on 2 cores), BENCHMARKS.md
	$(BIN)/likestream bench --out bench-results --report BENCHMARKS.md $(BENCH_ARGS)
