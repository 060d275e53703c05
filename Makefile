# likestream: `make run` and `make test` install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install chromium kafka peers broker broker-stop run test unit integration chaos lint fmt clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

chromium:                     ## Debian's Chromium for the browser test (Playwright never downloads one)
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium; }

kafka: install                ## fetch the Kafka jars into ~/.cache/likestream (once)
	$(BIN)/python -c 'from likestream._broker import Broker; Broker.default().fetch()'

peers: install                ## bench only: build the Kafka Streams peer, a venv with the bench extra (Quix)
	-$(BIN)/python -m likestream._bench.peers

broker: install               ## start the embedded broker on :9092 (no-op when up)
	$(BIN)/likestream broker start

broker-stop: install
	$(BIN)/likestream broker stop

run: broker                   ## one worker with its web server on :6066
	$(BIN)/likestream worker

test: install lint chromium   ## every test, against a broker the tests start and stop
	$(BIN)/pytest -ra $(PYTEST_ARGS)

unit: install
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
