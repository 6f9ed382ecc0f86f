# `make run` sets up and starts the assistant; `make test` sets up and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run chat index eval test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job. The index is built on first use and rebuilt when the corpus changes.
run: chat

chat: $(STAMP)
	$(BIN)/assistant chat

index: $(STAMP)
	$(BIN)/assistant index

eval: $(STAMP)
	$(BIN)/assistant eval eval/questions.jsonl --compare --report eval/report.html --json eval/results.json

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) index test-artifacts
