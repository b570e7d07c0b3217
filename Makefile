# qphone: `make demo` and `make test` work on a fresh Debian machine (run as root or with sudo).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PKGS := libopus0 libopus-dev portaudio19-dev pulseaudio pulseaudio-utils libasound2-plugins sox espeak-ng asterisk-core-sounds-en-wav iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[audio,measure,dev]'
	$(BIN)/qkd-keyserver warmup
	@touch $(STAMP)

demo: setup
	$(BIN)/qphone demo

lint: setup
	$(BIN)/ruff check qphone keyserver tests bench
	$(BIN)/ruff format --check qphone keyserver tests bench

typecheck: setup
	$(BIN)/mypy qphone keyserver

test: setup lint typecheck
	$(BIN)/pytest -q -ra --durations=25

bench: setup
	$(BIN)/qphone bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
