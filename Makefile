# `make reproduce` and `make test` set everything up on first use: a .venv
# with the locked requirements (installed with --no-deps; see requirements.txt).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OUT ?= reports/quick-cpu
PRESET ?= quick
# Each trial process's TensorFlow threads: shared = cores // --parallel,
# faster on a small machine but a float32 matmul's bits depend on it (all =
# TensorFlow's default, the bits of a run alone); docs/performance.md.
TRIAL_THREADS ?= shared

.PHONY: reproduce test test-container clean

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { \
	  echo "$(PYTHON) not found; the lock needs Python 3.11. Either:" >&2; \
	  echo "  install it (pyenv install 3.11, or on Ubuntu python3.11 and" \
	       "python3.11-venv from the deadsnakes PPA), or pass PYTHON=<its path>;" >&2; \
	  echo "  or use the Docker image (docs/docker.md):" >&2; \
	  echo "    docker build -t tff-localsgd ." >&2; \
	  echo "    docker run --rm -v \"\$$PWD/out:/out\" --user \"\$$(id -u):\$$(id -g)\"" \
	       "tff-localsgd reproduce --preset=smoke" >&2; \
	  exit 1; }
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (TFF 0.87 needs <3.12)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.txt
	touch $@

reproduce: $(VENV)/.installed
	$(BIN)/python -m benchmarks.reproduce --preset=$(PRESET) --out=$(OUT) \
	  --trial_threads=$(TRIAL_THREADS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# Builds the Docker image with podman and runs the docker commands of docs/docker.md
# (as root on Debian 12; tests/container/run.sh says what it installs).
test-container:
	bash tests/container/run.sh

clean:
	rm -rf $(VENV)
