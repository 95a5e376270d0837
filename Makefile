# Two commands for a fresh clone (see README "Quick start"):
#   make demo   - create .venv, install tapeout, run the main job (the inference-7nm study)
#   make test   - create .venv, install tapeout with torch/onnx/transformers, run the whole test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test setup setup-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[plot]'
	touch $@

# torch==2.13.0 first and explicitly: a plain `torch` requirement would pull a multi-GB CUDA build
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[torch,onnx,hf,plot,ray,dev]'
	touch $(VENV)/.core $@

setup: $(VENV)/.core
setup-dev: $(VENV)/.dev

# the flagship study: ~2.5 min on 2 cores; writes out/study-inference-7nm/report.html and summary.md
demo: $(VENV)/.core
	$(BIN)/tapeout study inference-7nm

test: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
